// Runs once per QuickJS runtime, before any tenant code. Defines the host API on the global
// object, then freezes the global object and every intrinsic reachable from it, so that no run
// can leave anything behind for the next one. Returns the driver functions the Python side
// calls; they are never reachable from tenant code.
//
// Host calls never enter Python from JS (quickjs-ng forbids that under a time limit): a stub
// queues {id, op, arg} and returns a Promise; the driver drains the queue between JS slices and
// settles the Promises with the answers.
(function __sr_bootstrap() {
  'use strict';
  const stringify = JSON.stringify;
  const parse = JSON.parse;
  const freeze = Object.freeze;
  const PromiseCtor = Promise;
  const StringCtor = String;
  const ErrorCtor = Error;
  const TypeErrorCtor = TypeError;
  const dateNow = Date.now;
  const toISO = Date.prototype.toISOString;
  const DateCtor = Date;
  const mapGet = Map.prototype.get;
  const mapSet = Map.prototype.set;
  const mapDelete = Map.prototype.delete;
  const push = Array.prototype.push;
  const join = Array.prototype.join;
  const charCodeAt = String.prototype.charCodeAt;
  const promiseThen = Promise.prototype.then;
  const isFinite = Number.isFinite;
  const floor = Math.floor;
  const construct = Reflect.construct;
  const defineProperty = Object.defineProperty;
  const Uint8ArrayCtor = Uint8Array;
  const DOMExceptionCtor = DOMException;
  const SyntaxErrorCtor = SyntaxError;
  const WeakMapCtor = WeakMap;
  const weakMapGet = WeakMap.prototype.get;
  const weakMapSet = WeakMap.prototype.set;
  const isArray = Array.isArray;
  const objectKeys = Object.keys;
  const objectCreate = Object.create;
  const toLowerCase = String.prototype.toLowerCase;
  const stringIndexOf = String.prototype.indexOf;
  const stringSlice = String.prototype.slice;
  const sort = Array.prototype.sort;
  const splice = Array.prototype.splice;
  const isView = ArrayBuffer.isView;
  const typedArrayProto = Object.getPrototypeOf(Int8Array.prototype);
  const typedArrayGetter = (name) => Object.getOwnPropertyDescriptor(typedArrayProto, name).get;
  const typedArrayTag = typedArrayGetter(Symbol.toStringTag);
  const typedArrayBuffer = typedArrayGetter('buffer');
  const typedArrayOffset = typedArrayGetter('byteOffset');
  const typedArrayLength = typedArrayGetter('byteLength');

  let run = null; // the current run's state, reset by begin()
  let secret = null; // set once by the Python driver; every later driver call must carry it
  const defaultStackTraceLimit = Error.stackTraceLimit;

  // Error.stackTraceLimit is a runtime-wide setter that freezing Error cannot stop: put it
  // back before and after every run. (Error.prepareStackTrace is made inert below.)
  function __sr_resetErrorHooks() {
    Error.stackTraceLimit = defaultStackTraceLimit;
  }

  /* chacha20.js */

  const MAX_HOST_CALLS = 10000; // per run: storage and hashing are not free for the worker
  const MAX_BATCH = 500; // host calls handed to the worker at a time

  // `handle`, when given, learns the call's id and how to reject it (an aborted fetch).
  function __sr_hostCall(op, arg, handle) {
    return new PromiseCtor(function __sr_enqueue(resolve, reject) {
      if (run === null) {
        reject(new ErrorCtor('host calls are only possible during a run'));
        return;
      }
      if (run.nextId > MAX_HOST_CALLS) {
        reject(new ErrorCtor('host call limit ' + MAX_HOST_CALLS + ' reached in this run'));
        return;
      }
      const id = run.nextId++;
      mapSet.call(run.pending, id, { resolve, reject });
      if (handle !== undefined) {
        handle.id = id;
        handle.reject = reject;
      }
      // Serialised now, by the caller: the driver never runs tenant code (toJSON, getters).
      push.call(run.calls, '{"id":' + id + ',"op":' + stringify(op) + ',"arg":' + stringify(arg) + '}');
      push.call(run.callOps, op);
    });
  }

  // Never throws: a value whose getters, toJSON or toString throw is still logged, as a marker.
  function __sr_text(value) {
    if (typeof value === 'string') return value;
    try {
      if (value instanceof ErrorCtor) return StringCtor(value.stack ? value.name + ': ' + value.message + '\n' + value.stack : value);
      const json = stringify(value);
      if (json !== undefined) return json;
    } catch (e) {
      // fall back to String() below
    }
    try {
      return StringCtor(value);
    } catch (e) {
      return '[' + typeof value + ' that cannot be printed]';
    }
  }

  // UTF-8 size of s, counted no further than just past `limit` (the log cap is in bytes).
  function __sr_utf8Bytes(s, limit) {
    let n = 0;
    for (let i = 0; i < s.length && n <= limit; i++) {
      const c = charCodeAt.call(s, i);
      if (c < 0x80) n += 1;
      else if (c < 0x800) n += 2;
      else if (c >= 0xd800 && c <= 0xdbff && (charCodeAt.call(s, i + 1) & 0xfc00) === 0xdc00) {
        n += 4;
        i++;
      } else n += 3; // a lone surrogate is stored as U+FFFD: 3 bytes
    }
    return n;
  }

  function __sr_log(level, args) {
    if (run === null) return;
    if (run.logFull) {
      run.logDropped++;
      return;
    }
    let message = '';
    for (let i = 0; i < args.length; i++) message += (i ? ' ' : '') + __sr_text(args[i]);
    const entry = { time: toISO.call(new DateCtor(dateNow())), level, message };
    const room = run.logCap - run.logBytes - 48; // 48: the entry's time and level
    // A string has at least as many UTF-8 bytes as UTF-16 units: a long line is refused uncounted.
    const size = message.length > room ? room + 1 : __sr_utf8Bytes(message, room);
    if (size > room) {
      run.logFull = true;
      run.logDropped++;
      return;
    }
    run.logBytes += size + 48;
    push.call(run.logs, entry);
  }

  function __sr_json(value, what) {
    let json;
    try {
      json = stringify(value);
    } catch (e) {
      throw new TypeErrorCtor(what + ' must be JSON-serializable: ' + __sr_describe(e).message);
    }
    if (json === undefined) throw new TypeErrorCtor(what + ' must be JSON-serializable, got ' + typeof value);
    return json;
  }

  function __sr_key(key, fn) {
    if (typeof key !== 'string') throw new TypeErrorCtor('storage.' + fn + ': key must be a string');
    return key;
  }

  // Each host stub turns a synchronous argument error into a rejected Promise.
  function __sr_async(fn) {
    return function __sr_hostStub(...args) {
      try {
        return fn(...args);
      } catch (e) {
        return PromiseCtor.reject(e);
      }
    };
  }

  const console = freeze({
    log: function log(...args) { __sr_log('log', args); },
    info: function info(...args) { __sr_log('info', args); },
    warn: function warn(...args) { __sr_log('warn', args); },
    error: function error(...args) { __sr_log('error', args); },
    debug: function debug(...args) { __sr_log('debug', args); },
  });

  const storage = freeze({
    get: __sr_async(function get(key) {
      return __sr_hostCall('storage.get', { key: __sr_key(key, 'get') });
    }),
    set: __sr_async(function set(key, value, ttlSeconds) {
      if (ttlSeconds !== undefined && ttlSeconds !== null && (typeof ttlSeconds !== 'number' || !(ttlSeconds > 0) || !isFinite(ttlSeconds))) {
        throw new TypeErrorCtor('storage.set: ttlSeconds must be a positive, finite number');
      }
      const json = __sr_json(value, 'storage.set: value');
      return __sr_hostCall('storage.set', { key: __sr_key(key, 'set'), value: json, ttl: ttlSeconds ?? null });
    }),
    delete: __sr_async(function del(key) {
      return __sr_hostCall('storage.delete', { key: __sr_key(key, 'delete') });
    }),
    list: __sr_async(function list(prefix) {
      if (prefix !== undefined && prefix !== null && typeof prefix !== 'string') {
        throw new TypeErrorCtor('storage.list: prefix must be a string');
      }
      return __sr_hostCall('storage.list', { prefix: prefix ?? '' });
    }),
  });

  const secrets = freeze({
    get: __sr_async(function get(name) {
      if (typeof name !== 'string') throw new TypeErrorCtor('secrets.get: name must be a string');
      return __sr_hostCall('secrets.get', { name });
    }),
  });

  // Randomness is per run, seeded by the worker from os.urandom at every begin(): nothing a
  // run draws tells anything about another run's values.
  // Math.random: xorshift128+ (fast, not for secrets, as in every engine).
  const rng = [1, 2];
  function __sr_random() {
    let s1 = rng[0];
    const s0 = rng[1];
    rng[0] = s0;
    s1 ^= s1 << 11;
    s1 ^= s1 >>> 8;
    rng[1] = (s1 ^ s0 ^ (s0 >>> 19)) >>> 0;
    return (rng[1] + s0) >>> 0;
  }
  defineProperty(Math, 'random', {
    value: function random() {
      return ((__sr_random() >>> 5) * 67108864 + (__sr_random() >>> 6)) / 9007199254740992;
    },
  });

  // crypto: a ChaCha20 stream keyed per run with 256 bits from the OS (a CSPRNG).
  let csprngKey = null; // 8 words while a run goes on
  let csprngCounter = 0;
  let csprngUsed = 64;
  const csprngNonce = [0, 0, 0];
  const csprngBlock = [];
  function __sr_randomBytes(bytes) {
    if (csprngKey === null) throw new ErrorCtor('crypto is only available during a run');
    for (let i = 0; i < bytes.length; i++) {
      if (csprngUsed === 64) {
        __sr_chacha20Block(csprngKey, csprngCounter++, csprngNonce, csprngBlock);
        csprngUsed = 0;
      }
      bytes[i] = csprngBlock[csprngUsed++];
    }
    return bytes;
  }
  const INTEGER_ARRAYS = freeze({
    __proto__: null, Int8Array: 1, Uint8Array: 1, Uint8ClampedArray: 1, Int16Array: 1, Uint16Array: 1,
    Int32Array: 1, Uint32Array: 1, BigInt64Array: 1, BigUint64Array: 1,
  });
  const HEX = '0123456789abcdef';
  function __sr_uuid() {
    const b = __sr_randomBytes(new Uint8ArrayCtor(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let out = '';
    for (let i = 0; i < 16; i++) {
      if (i === 4 || i === 6 || i === 8 || i === 10) out += '-';
      out += HEX[floor(b[i] / 16)] + HEX[b[i] % 16];
    }
    return out;
  }
  const crypto = freeze({
    getRandomValues: function getRandomValues(array) {
      const tag = isView(array) ? typedArrayTag.call(array) : undefined;
      if (tag === undefined || INTEGER_ARRAYS[tag] !== 1) {
        throw new DOMExceptionCtor('crypto.getRandomValues: the argument must be an integer typed array', 'TypeMismatchError');
      }
      const length = typedArrayLength.call(array);
      if (length > 65536) {
        throw new DOMExceptionCtor('crypto.getRandomValues: ' + length + ' bytes asked, at most 65536 at a time', 'QuotaExceededError');
      }
      __sr_randomBytes(new Uint8ArrayCtor(typedArrayBuffer.call(array), typedArrayOffset.call(array), length));
      return array;
    },
    randomUUID: function randomUUID() { return __sr_uuid(); },
  });
  const utils = freeze({
    uuid: function uuid() { return __sr_uuid(); },
    hash: __sr_async(function hash(text, algorithm) {
      if (typeof text !== 'string') throw new TypeErrorCtor('utils.hash: text must be a string');
      if (algorithm !== undefined && algorithm !== null && typeof algorithm !== 'string') {
        throw new TypeErrorCtor('utils.hash: algorithm must be a string');
      }
      return __sr_hostCall('utils.hash', { text, algorithm: algorithm ?? 'sha256' });
    }),
  });


  // -- fetch: the WHATWG subset of docs/scripting.md, "Fetch" -------------------------------
  // The worker makes the call (worker/fetch/): here, only the arguments' shapes are checked
  // and the answer is dressed as a Response.
  const MAX_FETCH_BODY = 1048576; // bytes; the worker checks it too (FetchSettings.max_body_bytes)

  // Headers: lower-case names in insertion order; `get` joins repeated names with ", ".
  const headerState = new WeakMapCtor(); // Headers -> {list: [[name, value]], immutable}
  function __sr_headerPairs(init, what) {
    const out = [];
    if (init === undefined || init === null) return out;
    const state = weakMapGet.call(headerState, init);
    if (state !== undefined) {
      for (let i = 0; i < state.list.length; i++) push.call(out, [state.list[i][0], state.list[i][1]]);
      return out;
    }
    if (typeof init !== 'object') throw new TypeErrorCtor(what + ' must be an object, an array of [name, value] pairs or a Headers');
    if (isArray(init)) {
      for (let i = 0; i < init.length; i++) {
        const pair = init[i];
        if (!isArray(pair) || pair.length !== 2) throw new TypeErrorCtor(what + ': each entry must be a [name, value] pair');
        push.call(out, [StringCtor(pair[0]), StringCtor(pair[1])]);
      }
      return out;
    }
    const keys = objectKeys(init);
    for (let i = 0; i < keys.length; i++) push.call(out, [keys[i], StringCtor(init[keys[i]])]);
    return out;
  }
  function __sr_headers(self) {
    const state = weakMapGet.call(headerState, self);
    if (state === undefined) throw new TypeErrorCtor('not a Headers object');
    return state;
  }
  function __sr_mutable(self, fn) {
    const state = __sr_headers(self);
    if (state.immutable) throw new TypeErrorCtor('Headers.' + fn + ': the headers of a Response cannot be changed');
    return state;
  }
  function __sr_dropHeader(list, name) {
    for (let i = list.length - 1; i >= 0; i--) if (list[i][0] === name) splice.call(list, i, 1);
  }
  function Headers(init) {
    if (new.target === undefined) throw new TypeErrorCtor("Headers must be called with 'new'");
    const list = [];
    const pairs = __sr_headerPairs(init, 'Headers');
    for (let i = 0; i < pairs.length; i++) push.call(list, [toLowerCase.call(pairs[i][0]), pairs[i][1]]);
    weakMapSet.call(headerState, this, { list, immutable: false });
  }
  function __sr_joined(list, name) {
    let value = null;
    for (let i = 0; i < list.length; i++) if (list[i][0] === name) value = value === null ? list[i][1] : value + ', ' + list[i][1];
    return value;
  }
  function __sr_sortedEntries(list) {
    const names = [];
    for (let i = 0; i < list.length; i++) if (names.indexOf(list[i][0]) === -1) push.call(names, list[i][0]);
    sort.call(names);
    const out = [];
    for (let i = 0; i < names.length; i++) push.call(out, [names[i], __sr_joined(list, names[i])]);
    return out;
  }
  Headers.prototype.get = function get(name) { return __sr_joined(__sr_headers(this).list, toLowerCase.call(StringCtor(name))); };
  Headers.prototype.has = function has(name) { return this.get(name) !== null; };
  Headers.prototype.append = function append(name, value) {
    push.call(__sr_mutable(this, 'append').list, [toLowerCase.call(StringCtor(name)), StringCtor(value)]);
  };
  Headers.prototype.set = function set(name, value) {
    const list = __sr_mutable(this, 'set').list;
    const key = toLowerCase.call(StringCtor(name));
    __sr_dropHeader(list, key);
    push.call(list, [key, StringCtor(value)]);
  };
  Headers.prototype.delete = function del(name) {
    __sr_dropHeader(__sr_mutable(this, 'delete').list, toLowerCase.call(StringCtor(name)));
  };
  Headers.prototype.entries = function entries() { return __sr_sortedEntries(__sr_headers(this).list).values(); };
  Headers.prototype.keys = function keys() { return __sr_sortedEntries(__sr_headers(this).list).map((e) => e[0]).values(); };
  Headers.prototype.values = function values() { return __sr_sortedEntries(__sr_headers(this).list).map((e) => e[1]).values(); };
  Headers.prototype.forEach = function forEach(callback, thisArg) {
    const entries = __sr_sortedEntries(__sr_headers(this).list);
    for (let i = 0; i < entries.length; i++) callback.call(thisArg, entries[i][1], entries[i][0], this);
  };
  Headers.prototype[Symbol.iterator] = Headers.prototype.entries;

  // AbortController and AbortSignal: what fetch needs of them. No timers run here, so
  // AbortSignal.timeout(ms) is a signal that shortens the call's own timeout.
  const signalState = new WeakMapCtor(); // AbortSignal -> {aborted, reason, onabort, listeners, timeoutMs}
  function AbortSignal() { throw new TypeErrorCtor('AbortSignal cannot be constructed: use new AbortController().signal'); }
  function __sr_signal(timeoutMs) {
    const signal = objectCreate(AbortSignal.prototype);
    weakMapSet.call(signalState, signal, { aborted: false, reason: undefined, onabort: null, listeners: [], timeoutMs });
    return signal;
  }
  function __sr_signalState(self) {
    const state = weakMapGet.call(signalState, self);
    if (state === undefined) throw new TypeErrorCtor('not an AbortSignal');
    return state;
  }
  function __sr_abort(signal, reason) {
    const state = __sr_signalState(signal);
    if (state.aborted) return;
    state.aborted = true;
    state.reason = reason === undefined ? new DOMExceptionCtor('This operation was aborted', 'AbortError') : reason;
    const event = freeze({ type: 'abort', target: signal });
    const listeners = state.listeners.slice();
    if (typeof state.onabort === 'function') push.call(listeners, state.onabort);
    for (let i = 0; i < listeners.length; i++) {
      try {
        listeners[i].call(signal, event);
      } catch (e) {
        __sr_log('error', ['an abort listener threw:', e]);
      }
    }
  }
  defineProperty(AbortSignal.prototype, 'aborted', { get: function aborted() { return __sr_signalState(this).aborted; } });
  defineProperty(AbortSignal.prototype, 'reason', { get: function reason() { return __sr_signalState(this).reason; } });
  defineProperty(AbortSignal.prototype, 'onabort', {
    get: function onabort() { return __sr_signalState(this).onabort; },
    set: function onabort(fn) { __sr_signalState(this).onabort = fn; },
  });
  AbortSignal.prototype.throwIfAborted = function throwIfAborted() {
    const state = __sr_signalState(this);
    if (state.aborted) throw state.reason;
  };
  AbortSignal.prototype.addEventListener = function addEventListener(type, listener) {
    if (type === 'abort' && typeof listener === 'function') push.call(__sr_signalState(this).listeners, listener);
  };
  AbortSignal.prototype.removeEventListener = function removeEventListener(type, listener) {
    const listeners = __sr_signalState(this).listeners;
    const at = listeners.indexOf(listener);
    if (type === 'abort' && at !== -1) splice.call(listeners, at, 1);
  };
  AbortSignal.abort = function abort(reason) {
    const signal = __sr_signal(undefined);
    __sr_abort(signal, reason);
    return signal;
  };
  AbortSignal.timeout = function timeout(ms) {
    if (typeof ms !== 'number' || !(ms > 0) || !isFinite(ms)) throw new TypeErrorCtor('AbortSignal.timeout: ms must be a positive number');
    return __sr_signal(ms);
  };
  function AbortController() {
    if (new.target === undefined) throw new TypeErrorCtor("AbortController must be called with 'new'");
    defineProperty(this, 'signal', { value: __sr_signal(undefined), enumerable: true });
  }
  AbortController.prototype.abort = function abort(reason) { __sr_abort(this.signal, reason); };

  function __sr_response(raw) {
    const headers = new Headers(raw.headers);
    __sr_headers(headers).immutable = true;
    const body = raw.body;
    let used = false;
    function consume(fn) {
      if (used) throw new TypeErrorCtor('Response.' + fn + ': the body has already been read');
      used = true;
    }
    return freeze({
      status: raw.status,
      statusText: raw.statusText,
      ok: raw.status >= 200 && raw.status <= 299,
      url: raw.url,
      redirected: raw.redirected,
      headers,
      get bodyUsed() { return used; },
      text: __sr_async(function text() {
        consume('text');
        return PromiseCtor.resolve(body);
      }),
      json: __sr_async(function json() {
        consume('json');
        try {
          return PromiseCtor.resolve(parse(body));
        } catch (e) {
          // Scheme, host and path only: the query string (a key, a signed redirect's signature) may hold a secret.
          const query = stringIndexOf.call(raw.url, '?');
          const where = query === -1 ? raw.url : stringSlice.call(raw.url, 0, query);
          throw new SyntaxErrorCtor('Response.json: the answer from ' + where + ' is not JSON (' + __sr_describe(e).message + ')');
        }
      }),
    });
  }

  function __sr_fetchUrl(input) {
    if (typeof input === 'string') return input;
    if (input !== null && typeof input === 'object') {
      if (typeof input.href === 'string') return input.href; // a URL-like object
      if (typeof input.url === 'string') return input.url; // a Request-like object
    }
    throw new TypeErrorCtor('fetch: the URL must be a string');
  }

  function __sr_fetch(input, init) {
    const url = __sr_fetchUrl(input);
    if (init === undefined || init === null) init = {};
    if (typeof init !== 'object') throw new TypeErrorCtor('fetch: the second argument must be an object');
    const method = init.method === undefined || init.method === null ? 'GET' : init.method;
    if (typeof method !== 'string') throw new TypeErrorCtor('fetch: method must be a string');
    const headers = __sr_headerPairs(init.headers, 'fetch: headers');
    const body = init.body === undefined || init.body === null ? null : init.body;
    if (body !== null && typeof body !== 'string') {
      throw new TypeErrorCtor('fetch: body must be a string (JSON.stringify an object first)');
    }
    if (body !== null && __sr_utf8Bytes(body, MAX_FETCH_BODY) > MAX_FETCH_BODY) {
      throw new TypeErrorCtor('fetch: the request body is over the limit of ' + MAX_FETCH_BODY + ' bytes');
    }
    const redirect = init.redirect === undefined || init.redirect === null ? 'follow' : init.redirect;
    if (typeof redirect !== 'string') throw new TypeErrorCtor('fetch: redirect must be "follow", "manual" or "error"');
    let timeoutMs = init.timeoutMs === undefined || init.timeoutMs === null ? null : init.timeoutMs;
    if (timeoutMs !== null && (typeof timeoutMs !== 'number' || !(timeoutMs > 0) || !isFinite(timeoutMs))) {
      throw new TypeErrorCtor('fetch: timeoutMs must be a positive number of milliseconds');
    }
    let signal = null;
    if (init.signal !== undefined && init.signal !== null) {
      signal = weakMapGet.call(signalState, init.signal);
      if (signal === undefined) throw new TypeErrorCtor('fetch: signal must be an AbortSignal');
      if (signal.aborted) return PromiseCtor.reject(signal.reason);
      if (signal.timeoutMs !== undefined) timeoutMs = timeoutMs === null ? signal.timeoutMs : Math.min(timeoutMs, signal.timeoutMs);
    }
    const handle = {};
    const owner = run;
    const call = __sr_hostCall('fetch', { url, method, headers, body, redirect, timeoutMs }, handle);
    if (signal !== null && handle.id !== undefined) {
      push.call(signal.listeners, function __sr_abortFetch() {
        if (run !== owner || mapGet.call(run.pending, handle.id) === undefined) return; // answered already
        mapDelete.call(run.pending, handle.id);
        handle.reject(signal.reason);
        __sr_hostCall('fetch.abort', { call: handle.id });
      });
    }
    return promiseThen.call(call, __sr_response);
  }

  Object.defineProperty(globalThis, 'console', { value: console, enumerable: false });
  Object.defineProperty(globalThis, 'storage', { value: storage, enumerable: false });
  Object.defineProperty(globalThis, 'secrets', { value: secrets, enumerable: false });
  Object.defineProperty(globalThis, 'utils', { value: utils, enumerable: false });
  Object.defineProperty(globalThis, 'crypto', { value: crypto, enumerable: false });
  Object.defineProperty(globalThis, 'fetch', { value: __sr_async(__sr_fetch), enumerable: false });
  Object.defineProperty(globalThis, 'Headers', { value: Headers, enumerable: false });
  Object.defineProperty(globalThis, 'AbortController', { value: AbortController, enumerable: false });
  Object.defineProperty(globalThis, 'AbortSignal', { value: AbortSignal, enumerable: false });
  Object.defineProperty(globalThis, 'context', {
    get: function context() { return run === null ? null : run.context; },
    enumerable: false,
  });

  // Freeze everything reachable from the global object, plus intrinsics that are not.
  function __sr_deepFreeze(roots) {
    const seen = new Set();
    const stack = roots.slice();
    while (stack.length) {
      const o = stack.pop();
      if (o === null || (typeof o !== 'object' && typeof o !== 'function') || seen.has(o)) continue;
      seen.add(o);
      const keys = Reflect.ownKeys(o);
      for (let i = 0; i < keys.length; i++) {
        const d = Object.getOwnPropertyDescriptor(o, keys[i]);
        if (d === undefined) continue;
        if ('value' in d) stack.push(d.value);
        else {
          stack.push(d.get);
          stack.push(d.set);
        }
      }
      stack.push(Object.getPrototypeOf(o));
      freeze(o);
    }
  }
  // Stack-trace call sites would hand a script the functions on its stack (its own compiled
  // factory, the driver's entry points) and their receivers. Their methods that return those
  // answer undefined, and the hook that makes call sites is inert for scripts.
  const callSite = (function () {
    Error.prepareStackTrace = (e, sites) => sites;
    const sites = new ErrorCtor().stack;
    Error.prepareStackTrace = undefined;
    return sites[0];
  })();
  const callSiteProto = Object.getPrototypeOf(callSite);
  for (const name of ['getFunction', 'getThis']) {
    defineProperty(callSiteProto, name, { value: function () { return undefined; } });
  }
  defineProperty(ErrorCtor, 'prepareStackTrace', {
    get: function prepareStackTrace() { return undefined; },
    set: function prepareStackTrace(hook) {}, // ignored: stacks stay strings
    enumerable: false,
    configurable: false,
  });

  // A FinalizationRegistry's callback runs only inside the run that made the registry: run
  // later (its target freed in another run), it would act with that run's context and storage.
  const NativeRegistry = FinalizationRegistry;
  const Registry = function FinalizationRegistry(cleanup) {
    if (new.target === undefined) throw new TypeErrorCtor("FinalizationRegistry must be called with 'new'");
    if (typeof cleanup !== 'function') throw new TypeErrorCtor('FinalizationRegistry: cleanup must be a function');
    const owner = run;
    const guarded = function (held) {
      if (owner !== null && run === owner) cleanup(held);
    };
    return construct(NativeRegistry, [guarded], new.target);
  };
  Registry.prototype = NativeRegistry.prototype;
  defineProperty(NativeRegistry.prototype, 'constructor', { value: Registry });
  defineProperty(globalThis, 'FinalizationRegistry', { value: Registry });

  // Intrinsics no property path from globalThis reaches: made from objects that have them.
  const hidden = [globalThis, (function () { return arguments; })()];
  const makers = [
    () => function* () {},
    () => async function () {},
    () => async function* () {},
    () => (function* () {})(),
    () => (async function* () {})(),
    () => [][Symbol.iterator](),
    () => new Map().entries(),
    () => new Set().entries(),
    () => ''[Symbol.iterator](),
    () => /x/[Symbol.matchAll](''),
    () => Int8Array,
    () => [].values().map((x) => x),
    () => Iterator.from({ next() { return { done: true }; } }),
    () => Iterator.concat([]),
    () => callSite,
  ];
  for (let i = 0; i < makers.length; i++) {
    try {
      const made = makers[i]();
      hidden.push(made, Object.getPrototypeOf(made));
    } catch (e) {
      // this engine build lacks that feature: nothing to freeze
    }
  }
  __sr_deepFreeze(hidden);

  // Parsed JSON: plain objects and arrays whose prototypes are frozen already.
  function __sr_freezeData(o) {
    if (o === null || typeof o !== 'object') return;
    const keys = Object.keys(o);
    for (let i = 0; i < keys.length; i++) __sr_freezeData(o[keys[i]]);
    freeze(o);
  }

  // What was thrown, as {name, message, stack} strings. Never throws: a thrown Proxy or object
  // whose traps, getters, toJSON or toString throw is still reported as an exception.
  function __sr_describe(e) {
    let isError = false;
    try {
      isError = e instanceof ErrorCtor;
    } catch (err) {
      // a Proxy whose getPrototypeOf trap throws: described as a non-Error below
    }
    if (isError) {
      try {
        return { name: StringCtor(e.name), message: StringCtor(e.message), stack: StringCtor(e.stack || '') };
      } catch (err) {
        return { name: 'Error', message: '(a thrown Error whose name or message cannot be read)', stack: '' };
      }
    }
    let text;
    try {
      text = typeof e === 'string' ? e : stringify(e);
    } catch (err) {
      text = undefined; // a BigInt, a cycle, a throwing toJSON: try String() instead
    }
    if (text === undefined) {
      try {
        text = StringCtor(e);
      } catch (err) {
        text = '(a thrown ' + typeof e + ' that cannot be turned into text)';
      }
    }
    return { name: 'Uncaught non-Error value', message: text, stack: '' };
  }

  function __sr_finish() {
    const state = run;
    run = null;
    csprngKey = null;
    __sr_resetErrorHooks();
    const out = { done: true, ok: state.outcome.ok, logs: state.logs, logDropped: state.logDropped };
    if (state.outcome.ok) {
      try {
        out.value = state.outcome.value === undefined ? 'null' : stringify(state.outcome.value);
        if (out.value === undefined) out.value = 'null';
      } catch (e) {
        out.ok = false;
        const why = __sr_describe(e);
        out.error = { name: 'TypeError', message: 'main returned a value that is not JSON-serializable: ' + why.message, stack: '' };
      }
    } else {
      out.error = state.outcome.error;
    }
    return stringify(out);
  }

  const ops = freeze({
    // The factory is kept across runs (the compile cache): frozen, it carries nothing of one
    // run into the next.
    compile: function __sr_compile(body) {
      const factory = new Function(body);
      freeze(factory.prototype);
      return freeze(factory);
    },
    // Sets up the run, then calls main: the first JS slice of every run.
    begin: function __sr_begin(setupJson, factory, eventJson) {
      __sr_resetErrorHooks();
      const setup = parse(setupJson);
      __sr_freezeData(setup.context);
      const state = {
        context: setup.context,
        logs: [],
        logBytes: 0,
        logCap: setup.logCap,
        logFull: false,
        logDropped: 0,
        calls: [],
        callOps: [], // the op of each entry of calls
        pending: new Map(),
        nextId: 1,
        outcome: null,
      };
      run = state;
      const seed = setup.seed;
      csprngKey = [seed[0], seed[1], seed[2], seed[3], seed[4], seed[5], seed[6], seed[7]];
      csprngCounter = 0;
      csprngUsed = 64;
      rng[0] = seed[8] || 1;
      rng[1] = seed[9] || 2;
      let settled;
      try {
        const main = factory();
        if (typeof main !== 'function') throw new TypeErrorCtor('the script must define a function main(event)');
        const result = main(parse(eventJson));
        // A promise of our own, so that no `then`, `constructor` or species of the returned
        // value stands between main and the outcome (a thenable's own `then` still runs).
        settled = new PromiseCtor(function __sr_adopt(resolve) { resolve(result); });
      } catch (e) {
        state.outcome = { ok: false, error: __sr_describe(e) };
        return;
      }
      promiseThen.call(
        settled,
        function __sr_fulfilled(value) { state.outcome = { ok: true, value }; },
        function __sr_rejected(e) { state.outcome = { ok: false, error: __sr_describe(e) }; },
      );
    },
    // Host calls waiting for answers, or, once main has settled, the run's outcome.
    poll: function __sr_poll() {
      const calls = run.calls;
      if (run.outcome !== null) {
        // The run is over: a fetch not started yet is never made (one in flight is cut off by
        // the worker); other calls still go (an unawaited storage.set is kept).
        // callOps stays in step with calls: a batch may still be left, and a callback of this
        // one may queue a fetch behind it.
        for (let i = calls.length - 1; i >= 0; i--) {
          if (run.callOps[i] === 'fetch') {
            splice.call(calls, i, 1);
            splice.call(run.callOps, i, 1);
          }
        }
      }
      if (calls.length) {
        const batch = calls.splice(0, MAX_BATCH);
        splice.call(run.callOps, 0, MAX_BATCH);
        // join, not +: the binding cannot read the rope strings that + may build
        return join.call(['{"calls":[', join.call(batch, ','), ']}'], '');
      }
      if (run.outcome !== null) return __sr_finish();
      // Nothing new to ask: wait for answers still due (fetches in flight), if any.
      return run.pending.size ? '{"calls":[],"waiting":true}' : '{"calls":[]}';
    },
    settle: function __sr_settle(answersJson) {
      const answers = parse(answersJson);
      for (let i = 0; i < answers.length; i++) {
        const a = answers[i];
        const p = mapGet.call(run.pending, a.id);
        if (p === undefined) continue;
        mapDelete.call(run.pending, a.id);
        // A fetch's answer comes as an object (`response`), escaped once; others as JSON text.
        if (a.ok) p.resolve(a.response !== undefined ? a.response : a.value === undefined ? null : parse(a.value));
        else p.reject(new ErrorCtor(a.error));
      }
    },
    // After a run was aborted (a limit): keep its logs, leave no run state behind.
    abandon: function __sr_abandon() {
      const out = run === null ? { logs: [], logDropped: 0 } : { logs: run.logs, logDropped: run.logDropped };
      run = null;
      csprngKey = null;
      __sr_resetErrorHooks();
      return stringify(out);
    },
  });

  // The one handle the Python driver holds. Tenant code can reach it through stack-trace
  // call sites, so every call must carry the secret the driver set first.
  return function __sr_driver(op, key, a, b, c) {
    if (op === 'init' && secret === null && typeof key === 'string' && key.length >= 32) {
      secret = key;
      return undefined;
    }
    if (secret === null || key !== secret || !Object.prototype.hasOwnProperty.call(ops, op)) {
      throw new TypeErrorCtor('not allowed');
    }
    return ops[op](a, b, c);
  };
})()

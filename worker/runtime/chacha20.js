// The ChaCha20 block function of RFC 8439 (section 2.3), written from the RFC. The bootstrap
// pastes this inside its own scope (nothing here reaches the global object), and keys it per
// run with 256 bits from the worker's os.urandom: a CSPRNG for crypto.getRandomValues.
// tests/test_sandbox_random.py checks it against the RFC's test vector.
function __sr_chacha20Block(key, counter, nonce, out) {
  const s = [
    0x61707865, 0x3320646e, 0x79622d32, 0x6b206574,
    key[0], key[1], key[2], key[3], key[4], key[5], key[6], key[7],
    counter >>> 0, nonce[0], nonce[1], nonce[2],
  ];
  const x = s.slice();
  function quarter(a, b, c, d) {
    x[a] = (x[a] + x[b]) | 0; x[d] ^= x[a]; x[d] = (x[d] << 16) | (x[d] >>> 16);
    x[c] = (x[c] + x[d]) | 0; x[b] ^= x[c]; x[b] = (x[b] << 12) | (x[b] >>> 20);
    x[a] = (x[a] + x[b]) | 0; x[d] ^= x[a]; x[d] = (x[d] << 8) | (x[d] >>> 24);
    x[c] = (x[c] + x[d]) | 0; x[b] ^= x[c]; x[b] = (x[b] << 7) | (x[b] >>> 25);
  }
  for (let i = 0; i < 10; i++) {
    quarter(0, 4, 8, 12); quarter(1, 5, 9, 13); quarter(2, 6, 10, 14); quarter(3, 7, 11, 15);
    quarter(0, 5, 10, 15); quarter(1, 6, 11, 12); quarter(2, 7, 8, 13); quarter(3, 4, 9, 14);
  }
  for (let i = 0; i < 16; i++) {
    const w = (x[i] + s[i]) >>> 0; // serialised little-endian, as the RFC does
    out[i * 4] = w & 0xff;
    out[i * 4 + 1] = (w >>> 8) & 0xff;
    out[i * 4 + 2] = (w >>> 16) & 0xff;
    out[i * 4 + 3] = w >>> 24;
  }
  return out;
}

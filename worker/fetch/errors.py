"""The one error every refusal or failure of a fetch becomes."""

# Each kind is an outcome label of the metrics to come and picks the message's wording.
KINDS = (
    "bad_request",  # a URL, method, header or body the client will not send
    "blocked",  # the guard: an address, a blocked host, a host outside the tenant's allowlist
    "too_many_requests",
    "body_too_large",
    "too_large",  # the response
    "timeout",
    "dns",
    "connection",
    "tls",
    "redirect",  # too many, or one refused by `redirect: "error"`
    "aborted",  # the script's AbortSignal, or the run ended first
)


class FetchError(Exception):
    """A fetch that failed or was refused: `str()` is the message the script sees."""

    def __init__(self, kind: str, message: str):
        assert kind in KINDS, kind
        super().__init__(message)
        self.kind = kind
        self.message = message

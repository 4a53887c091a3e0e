"""The delivery wire, used by the worker and the API alike: who may be called (SSRF
rules), the one HTTP client, Standard Webhooks signing, custom headers, secrets at
rest, what an attempt's answer means, and the retry schedule."""

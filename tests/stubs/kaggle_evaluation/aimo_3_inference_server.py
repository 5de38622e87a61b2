"Stand-in for the AIMO-3 inference server: answers are ints in 0..99999."
from ._gateway import GatewayError, InferenceServer  # noqa: F401 (GatewayError: the real module exports it too)


class AIMO3InferenceServer(InferenceServer):
    modulus = 100_000

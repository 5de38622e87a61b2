"Stand-in for the AIMO-2 inference server: answers are ints in 0..999."
from ._gateway import GatewayError, InferenceServer  # noqa: F401 (GatewayError: the real module exports it too)


class AIMO2InferenceServer(InferenceServer):
    modulus = 1000

"Test doubles: stand-ins for heavy or remote dependencies, used by the tests and the notebooks, never shipped."

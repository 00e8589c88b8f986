"""Helpers shared by the tests: the only test code that one test module may import from another.

Test modules (``test_*.py``) and conftest files import each other never; what two of them need
lives here, one module per noun. Fixtures stay in conftest files. Keep this file free of
imports: ``python -m tests.support.listener`` runs a module of this package as a process.
"""

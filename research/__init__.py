"""Research code behind the numbers in docs/: out-of-scope studies, the inbox's clustering
study, constructed traffic for a bot, the serving load test.

Used by ``scripts/`` and tested under ``tests/research/``; not part of the installed package
(``pyproject.toml`` packages ``rasa_meta*`` only), so nothing in ``rasa_meta`` imports it.
Scripts run from a checkout put the repository root on ``sys.path`` to import it.
"""

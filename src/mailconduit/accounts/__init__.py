"""Console accounts in the store: users, API tokens and sessions (:mod:`.users`), and the
limits on guessing passwords (:mod:`.signin`).

Below the web console and the CLI (``mailconduit users``), which both use them.
"""

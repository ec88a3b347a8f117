"""Mail: jobs queued in the outbox (:mod:`.outbox`), sent over SMTP by the outbox relay
(:mod:`.smtp`, settings parsed by :mod:`.config`), and ``flashsale mail-sink``, a local
SMTP server for development, tests and the demo (:mod:`.sink`). See
docs/operations.md#mail.

Importing this package imports nothing of its modules (the settings import
:mod:`.config` alone).
"""

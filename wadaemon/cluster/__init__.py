"""Several instances sharing the accounts: ownership leases, heartbeats, fair share.

``timing`` (the lease clock rules), ``share`` (who should run which account: pure),
``fence`` (what stops an account's subtree and refuses its writes once the lease may be lost),
``ownership`` (the actor that renews, hands over and takes accounts).
"""

"""A thin kubernetes-asyncio adapter layer shared by the operator and the node agent.

Everything that talks to the Kubernetes API lives here: building a client, list-then-watch with
relist on 410 Gone, Lease leader election, Events and status patches. Decisions live elsewhere as
pure functions over plain dicts.
"""

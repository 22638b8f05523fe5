"""The network service: network configs made in a control plane through a plugin, and VM port addresses.

spec.py turns a request into a validated NetworkSpec, manager.py runs CREATE / INFO / UPDATE / DELETE
through a plugin (plugins/: native, alcor), ipam.py hands VM ports their addresses, store.py holds every
Redis key, server.py maps gRPC to the manager, app.py builds them all.
"""

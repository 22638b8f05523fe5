"""Alcor's southbound on an emulated host (#29): alcor.schema.GoalStateProvisioner served as Alcor's
Control Agent serves it. `plan` reads a goal state into work, `provisioner` applies it through an
Applier and answers, `host` applies it to a vhost's plane (neighbours become the VNI's overlay entries
and flood list; a port is PENDING until its VM exists), `record` is a plain recording Applier.

Every agent serves it beside its own API (same server, same address). Still to come: each real host on
its data-plane address at port 50001, the stand-in pushing goal states, our own push off with `alcor`.
"""

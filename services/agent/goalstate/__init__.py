"""Alcor's southbound on an emulated host (#29): alcor.schema.GoalStateProvisioner served as Alcor's
Control Agent serves it. `plan` reads a goal state into work, `provisioner` applies it through an
Applier and answers, `host` applies it to a vhost's plane (neighbours become the VNI's overlay entries
and flood list; a port is PENDING until its VM exists), `record` is a plain recording Applier.

Every agent serves it beside its own API (same server, same address: a goal state picks its vhost by
`host_resources`), and each vhost with Alcor ports also on its own goal-state address (the vhosts file's
`goalstate_address`, 127.K.H.L:50001 on a local lab), where Alcor reaches it.
"""

"""Alcor's southbound on an emulated host (#29): alcor.schema.GoalStateProvisioner served as Alcor's
Control Agent serves it. `plan` reads a goal state into work, `provisioner` applies it through an
Applier and answers, `record` is the fake data plane's Applier. Not yet served by the agents: the next
steps wire it to each host (port 50001), apply it to the real overlay, and have the stand-in push."""

"""The topology service: turns a topology request into an emulated data centre, reports on it, tears it down.

What it owns, by layer:
- the topology as data, no I/O: `models` (the validated spec and the generated graph), `generator`
  and the modules it draws on (the shapes, CUSTOM labs, addressing, limits), `dataplanes` (what
  each data plane makes a backend do), `names` (the namespace names backends and agents agree
  on), `diff` (what an UPDATE changes) and `faults` (what a fault request makes devices suffer);
- the lifecycle: `manager` (validate, store, build in the background, report live state, tear
  down), `store` (every Redis key of the service), `server` (the gRPC servicer), `metrics`;
- `backends`: where the emulation runs (local namespaces, Kubernetes pods), behind one interface;
- `app`, `config`, `__main__`: the composition root, its settings and the process entry point.
"""

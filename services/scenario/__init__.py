"""The scenario service: the user-facing API (gRPC, and Merak's REST on :3000). It owns the configs and
scenarios (in Redis) and drives topology, network and compute over gRPC, in Merak's order.

- models: entity kinds, references, the services a scenario deploys; states: every status, derived
  (replies, actions, the overall status) and which action may run; validate, translate, faults: pure
  checks, the other services' requests, fault schedules.
- store: every Redis key; entities: CRUD of configs and scenarios; tracker: statuses stored and read again.
- manager composes actions (DEPLOY/CHECK/DELETE/UPDATE), views (GET, watch, results, the test: pingall),
  teardown (DeleteScenario, reconciliation) and faultrun (running schedules).
- server and rest/: the APIs, thin; clients, metrics, config, app: the wiring.
"""

// Package apiaggregator holds the stages of two promises that gather the
// APIs of many teams under one hostname:
//
//   - ApiAggregator declares the hostname(s), the Gateway they are served on
//     (a dedicated Gateway of a GatewayClass, or a ListenerSet attached to a
//     shared Gateway), the TLS certificate, default timeouts, the maximum
//     request body size and the namespaces targets may come from.
//   - ApiAggregatorTarget joins one aggregator and lists the paths a team's
//     Service answers; it renders an HTTPRoute bound to the aggregator's
//     hostnames and parent, and a ReferenceGrant when the Service lives in
//     another namespace than the route.
//
// Both stages render Gateway API objects with ytt from a model computed in
// Go, so every decision (which rules, which weights, which grants) is a
// pure function with table tests, and the templates only lay out YAML.
//
// The target stage reads the aggregator and every other target through
// stage.Objects, because whether a target may have a path depends on who
// claimed it first (Admit) and where its routes go depends on where the
// aggregator was placed (status.destinations).
package apiaggregator

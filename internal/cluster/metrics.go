package cluster

import "github.com/prometheus/client_golang/prometheus"

// Collectors returns the node's Prometheus series. Label values are fixed
// sets (directions, claim outcomes), never ids or node names.
func (n *Node) Collectors() []prometheus.Collector {
	s := &n.stats
	counter := func(name, help string, labels prometheus.Labels, v func() int64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "pyrycode_relay_cluster_" + name, Help: help, ConstLabels: labels,
		}, func() float64 { return float64(v()) })
	}
	var cs []prometheus.Collector
	for dir, name := range []string{"to_binary", "to_phone"} {
		d := dir
		cs = append(cs,
			counter("messages_sent_total", "Cross-node messages published, by direction of the frame.",
				prometheus.Labels{"direction": name}, s.MsgsOut[d].Load),
			counter("messages_received_total", "Cross-node messages received, by direction of the frame.",
				prometheus.Labels{"direction": name}, s.MsgsIn[d].Load),
			counter("bytes_sent_total", "Payload bytes of cross-node messages published, by direction.",
				prometheus.Labels{"direction": name}, s.BytesOut[d].Load),
			counter("bytes_received_total", "Payload bytes of cross-node messages received, by direction.",
				prometheus.Labels{"direction": name}, s.BytesIn[d].Load),
		)
	}
	for i, name := range ClaimOutcomeNames {
		cs = append(cs, counter("claims_total", "Claims decided cluster-wide, by outcome.",
			prometheus.Labels{"outcome": name}, s.Claims[i].Load))
	}
	cs = append(cs,
		counter("gaps_total", "Cross-node phone streams closed (1011) because a message went missing.", nil, s.Gaps.Load),
		counter("refused_total", "Claims and phones refused with 1013 because the cluster could not be asked.", nil, s.Refused.Load),
		counter("nodes_lost_total", "Other nodes seen leaving or going silent.", nil, s.NodesLost.Load),
		counter("dropped_total", "Cross-node messages for a phone or id no longer here (the phone had gone).", nil, s.Dropped.Load),
		counter("batches_total", "NATS messages published carrying several cross-node messages (records ready at once, sent together).", nil, s.Batches.Load),
		counter("batched_total", "Cross-node messages published inside those batches.", nil, s.Batched.Load),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "pyrycode_relay_cluster_nats_connected", Help: "1 while this node is connected to NATS.",
		}, func() float64 {
			if n.connected.Load() {
				return 1
			}
			return 0
		}),
	)
	return cs
}

package engine

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// PrometheusCollector exposes the metrics of ListPodSandboxMetrics on
// /metrics, with exact values (seconds are not rounded down as the CRI's
// integers force). Each scrape reads every pod and container, as one
// pod_metrics job.
func (j *StatsJobs) PrometheusCollector() prometheus.Collector {
	return &promCollector{j: j}
}

type promCollector struct {
	j     *StatsJobs
	once  sync.Once
	descs map[*metricDef]*prometheus.Desc
}

// scrapeTimeout bounds one collection.
const scrapeTimeout = 30 * time.Second

// Describe sends nothing: the collector is unchecked (its families are
// fixed, but their series come and go with containers).
func (c *promCollector) Describe(chan<- *prometheus.Desc) {}

func (c *promCollector) Collect(ch chan<- prometheus.Metric) {
	c.once.Do(func() {
		c.descs = map[*metricDef]*prometheus.Desc{}
		for _, d := range c.j.s.metrics.defs {
			c.descs[d] = prometheus.NewDesc(d.name, d.help, append(append([]string{}, baseLabels...), d.extra...), nil)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	pods, err := c.j.Collect(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(prometheus.NewDesc("shim_container_metrics_error", "Reading container metrics failed.", nil, nil), err)
		return
	}
	send := func(ss []MetricSample) {
		for _, m := range ss {
			typ := prometheus.GaugeValue
			if m.def.typ == counter {
				typ = prometheus.CounterValue
			}
			pm, err := prometheus.NewConstMetric(c.descs[m.def], typ, m.Value, m.Labels...)
			if err != nil {
				ch <- prometheus.NewInvalidMetric(c.descs[m.def], err)
				continue
			}
			ch <- prometheus.NewMetricWithTimestamp(m.Time, pm)
		}
	}
	for _, p := range pods {
		send(p.Samples)
		for _, ctr := range p.Containers {
			send(ctr.Samples)
		}
	}
}

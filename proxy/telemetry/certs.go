package telemetry

import (
	"crypto/x509"
	"encoding/pem"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wasmgate/wasmgate/config"
)

var descCertExpiry = prometheus.NewDesc("wasmgate_certificate_expiry_timestamp_seconds",
	"Unix time at which a configured certificate (its leaf) expires, by certificate name.", []string{"name"}, nil)

// CertificateCollector reports the expiry of the certificates of the
// configuration live returns (nil before there is one), read when
// scraped.
func CertificateCollector(live func() *config.Config) prometheus.Collector {
	return certCollector(live)
}

type certCollector func() *config.Config

func (c certCollector) Describe(ch chan<- *prometheus.Desc) { ch <- descCertExpiry }

func (c certCollector) Collect(ch chan<- prometheus.Metric) {
	cfg := c()
	if cfg == nil {
		return
	}
	for _, crt := range cfg.Certificates {
		block, _ := pem.Decode([]byte(crt.CertPEM))
		if block == nil {
			continue
		}
		leaf, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			continue
		}
		ch <- prometheus.MustNewConstMetric(descCertExpiry, prometheus.GaugeValue, float64(leaf.NotAfter.Unix()), crt.Name)
	}
}

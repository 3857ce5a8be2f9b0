"""What operators paste into Prometheus and Grafana."""

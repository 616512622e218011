import { Option } from '@commander-js/extra-typings'
import { parseListenAddress } from '../metrics/listen-address.js'
import { checked } from './option-parsers.js'

/** `--metrics-listen` and `--metrics-file`, shared by the commands that record metrics (README "Metrics"). */
export function metricsListenOption(description = 'with --cron: serve Prometheus metrics at /metrics (and a replica\'s status at /status) on this address; a bare :PORT or PORT is 127.0.0.1') {
  return new Option('--metrics-listen <host:port>', description).argParser(checked(parseListenAddress))
}

export function metricsFileOption() {
  return new Option('--metrics-file <path>', 'after each run, write the metrics to this file, atomically (node_exporter\'s textfile collector reads *.prom)')
}

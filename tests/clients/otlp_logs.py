"""Sends log lines to a wormdb node with the real OpenTelemetry Python SDK and
one of its real OTLP log exporters, for tests/otlp.rs.

usage: otlp_logs.py grpc|http|http-json ENDPOINT LINES_JSON --service NAME
                    --base-ns N [--compression gzip] [--token SECRET]
                    [--batch-size N] [--timeout SECONDS]

ENDPOINT is HOST:PORT for grpc, the full URL of /v1/logs for http and
http-json. LINES_JSON is a file holding a JSON array of strings: line i is
emitted as a record with

- resource attributes service.name=NAME, host.name=loghub-host,
  service.version=1.2.3 (not a tag attribute);
- scope "wormdb.tests" version 0.1.0, scope attribute scope.kind=integration;
- record attributes loghub.line=i (int), loghub.ratio=i/4 (double),
  loghub.even=(i even) (bool), loghub.words=[first two words] (array),
  loghub.origin={"file": "loghub", "index": i} (map);
- severity by i % 3: text "Information" with INFO; ERROR2 with no text;
  WARN with no text;
- trace id 0x0af7651916cd43dd8448eb211c80319c XOR i, span id
  0x00f067aa0ba902b7 + i, trace flags 1 (sampled);
- time N + i * 1000, observed time N + i * 1000 + 7;
- the line as its body.

The SDK's batch processor exports through the exporter, which is wrapped to
record each export's result. Prints one JSON line, {"results": [...]}, and
exits 0 when every export succeeded.
"""

import argparse
import json
import sys

from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    LogRecordExporter,
    LogRecordExportResult,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
SPAN_ID = 0x00F067AA0BA902B7


class Recording(LogRecordExporter):
    """The real exporter, with each export's result kept."""

    def __init__(self, inner):
        self.inner = inner
        self.results = []

    def export(self, batch):
        result = self.inner.export(batch)
        self.results.append(result.name)
        return result

    def shutdown(self):
        self.inner.shutdown()

    def force_flush(self, timeout_millis=30_000):
        return self.inner.force_flush(timeout_millis)


def exporter(args):
    headers = {"authorization": f"Bearer {args.token}"} if args.token else None
    if args.transport == "grpc":
        import grpc
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

        compression = grpc.Compression.Gzip if args.compression == "gzip" else grpc.Compression.NoCompression
        return OTLPLogExporter(endpoint=args.endpoint, insecure=True, headers=headers, timeout=args.timeout,
                               compression=compression)
    gzip = args.compression == "gzip"
    if args.transport == "http":
        from opentelemetry.exporter.otlp.proto.http import Compression
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

        compression = Compression.Gzip if gzip else Compression.NoCompression
    else:
        from opentelemetry.exporter.otlp.common.http import Compression
        from opentelemetry.exporter.otlp.json.http._log_exporter import OTLPLogExporter

        compression = Compression.GZIP if gzip else Compression.NONE
    return OTLPLogExporter(endpoint=args.endpoint, headers=headers, timeout=args.timeout, compression=compression)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("transport", choices=["grpc", "http", "http-json"])
    parser.add_argument("endpoint")
    parser.add_argument("lines")
    parser.add_argument("--service", required=True)
    parser.add_argument("--base-ns", type=int, required=True)
    parser.add_argument("--compression", choices=["none", "gzip"], default="none")
    parser.add_argument("--token")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--timeout", type=float, default=10)
    args = parser.parse_args()
    with open(args.lines, encoding="utf-8") as file:
        lines = json.load(file)

    recording = Recording(exporter(args))
    resource = Resource({"service.name": args.service, "host.name": "loghub-host", "service.version": "1.2.3"})
    provider = LoggerProvider(resource=resource)
    provider.add_log_record_processor(
        BatchLogRecordProcessor(recording, schedule_delay_millis=60_000, max_export_batch_size=args.batch_size,
                                max_queue_size=max(len(lines), args.batch_size))
    )
    logger = provider.get_logger("wormdb.tests", "0.1.0", attributes={"scope.kind": "integration"})
    severities = [("Information", SeverityNumber.INFO), (None, SeverityNumber.ERROR2), (None, SeverityNumber.WARN)]
    for index, line in enumerate(lines):
        text, number = severities[index % 3]
        span = NonRecordingSpan(SpanContext(TRACE_ID ^ index, SPAN_ID + index, is_remote=False,
                                            trace_flags=TraceFlags(TraceFlags.SAMPLED)))
        logger.emit(
            timestamp=args.base_ns + index * 1000,
            observed_timestamp=args.base_ns + index * 1000 + 7,
            context=trace.set_span_in_context(span),
            severity_text=text,
            severity_number=number,
            body=line,
            attributes={
                "loghub.line": index,
                "loghub.ratio": index / 4,
                "loghub.even": index % 2 == 0,
                "loghub.words": line.split()[:2],
                "loghub.origin": {"file": "loghub", "index": index},
            },
        )
    flushed = provider.force_flush(int(args.timeout * 4 * 1000))
    provider.shutdown()
    ok = flushed and recording.results and all(result == "SUCCESS" for result in recording.results)
    print(json.dumps({"results": recording.results, "flushed": flushed}))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

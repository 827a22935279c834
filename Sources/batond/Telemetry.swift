import ArgumentParser
import Logging
import ServiceLifecycle

#if OTel
import OTel
#endif

#if canImport(Glibc)
import Glibc
#endif

/// batond's spans of job attempts (``AttemptTracer``), exported over OTLP/HTTP by swift-otel
/// when `--otel-endpoint` or `OTEL_EXPORTER_OTLP_ENDPOINT` names a collector, and only in a
/// batond built with the `OTel` trait (`swift build --traits OTel`): swift-otel takes minutes
/// to build, which nobody who does not trace should pay.
enum Telemetry {
    /// Whether this batond can export spans.
    static var isBuiltIn: Bool {
        #if OTel
        true
        #else
        false
        #endif
    }

    /// Bootstraps the tracer when a collector is named, and returns the service that exports
    /// its spans, to run beside the server (and stop after it, so the last spans leave).
    ///
    /// - Parameter endpoint: `--otel-endpoint`: a base URL, as `OTEL_EXPORTER_OTLP_ENDPOINT`
    ///   is; spans go to its `/v1/traces`.
    static func start(endpoint: String?, logger: Logger) throws -> (any Service)? {
        let environment = ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"].contains { name in
            guard let value = getenv(name) else { return false }
            return value.pointee != 0
        }
        guard endpoint != nil || environment else { return nil }
        #if OTel
        var configuration = OTel.Configuration.default
        configuration.serviceName = "batond"
        // batond's metrics are Prometheus's and its logs journald's: only traces go to the collector.
        configuration.metrics.enabled = false
        configuration.logs.enabled = false
        configuration.traces.otlpExporter.protocol = .httpProtobuf
        if let endpoint {
            configuration.traces.otlpExporter.endpoint = endpoint.hasSuffix("/") ? endpoint + "v1/traces" : endpoint + "/v1/traces"
        }
        configuration.diagnosticLogger = .custom(logger)
        configuration.diagnosticLogLevel = .warning
        let service = try OTel.bootstrap(configuration: configuration)
        logger.info("spans of job attempts exported over OTLP", metadata: ["endpoint": "\(endpoint ?? "from the environment")"])
        return service
        #else
        if endpoint != nil {
            throw ValidationError("--otel-endpoint needs a batond built with OpenTelemetry: swift build --traits OTel")
        }
        logger.warning("OTEL_EXPORTER_OTLP_ENDPOINT is set, but this batond was built without OpenTelemetry (swift build --traits OTel): it exports no spans")
        return nil
        #endif
    }
}

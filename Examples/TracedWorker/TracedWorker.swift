import BatonClient
import Logging
import ServiceLifecycle

#if OTel
import OTel
#endif

/// A worker whose handler spans reach a collector: built with the `OTel` trait and run with
/// `OTEL_EXPORTER_OTLP_ENDPOINT` set, it bootstraps swift-otel, and the worker's consumer
/// spans (and whatever the handler traces inside them) are exported over OTLP/HTTP.
///
/// `traced-worker SOCKET QUEUE...`: completes each job with the trace context it ran under.
/// The cross-client trace test (Tests/traces) runs it as its Swift worker.
@main
enum TracedWorker {
    static func main() async throws {
        let arguments = CommandLine.arguments.dropFirst()
        guard let socket = arguments.first, arguments.count > 1 else {
            print("usage: traced-worker SOCKET QUEUE...")
            return
        }
        var services: [any Service] = []
        #if OTel
        var configuration = OTel.Configuration.default
        configuration.serviceName = "traced-worker"
        configuration.metrics.enabled = false
        configuration.logs.enabled = false
        configuration.traces.otlpExporter.protocol = .httpProtobuf
        // First, so that it stops last, with the worker's last spans.
        services.append(try OTel.bootstrap(configuration: configuration))
        #endif
        let client = BatonClient(socketPath: socket)
        let worker = Worker(
            client: client, configuration: .init(queues: Array(arguments.dropFirst()), claimWait: .seconds(1)),
            completing: { job in try Completion(result: job.trace?.traceparent) }
        )
        services.append(worker)
        try await ServiceGroup(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: Logger(label: "traced-worker")).run()
        await client.close()
    }
}

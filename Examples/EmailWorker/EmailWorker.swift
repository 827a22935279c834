import BatonClient
import Logging
import ServiceLifecycle

struct Email: Codable {
    var to: String
    var subject: String
}

@main
enum EmailWorker {
    static func main() async throws {
        let client = BatonClient(socketPath: "baton-data/baton.sock")
        let worker = Worker(client: client, configuration: .init(queues: ["emails"], concurrency: 8)) { job in
            let email = try job.payload(as: Email.self)
            print("sending \(email.subject) to \(email.to)")  // throw to fail the attempt; it is retried
        }
        let logger = Logger(label: "emails")
        try await ServiceGroup(services: [worker], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger).run()
        await client.close()
    }
}

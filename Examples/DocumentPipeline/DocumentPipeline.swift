import BatonClient
import Logging
import ServiceLifecycle

#if canImport(Glibc)
import Glibc
#endif

/// An example worker: a document goes through three paid stages, and a retry resumes
/// after the last stage that finished instead of paying for it again.
///
/// Run `batond`, then `swift run document-pipeline`, then enqueue documents:
/// `baton enqueue documents '{"name":"novel.epub"}'`. SIGTERM or Ctrl-C stops it gracefully.
/// With `FAIL_ONCE_AT=embed` each document's first attempt fails at that stage, to show
/// the resume.
struct Document: Codable {
    var name: String
}

/// What a checkpoint records: the stages done so far.
struct Progress: Codable {
    var done: [String]
}

@main
enum DocumentPipeline {
    static let stages = ["extract", "chunk", "embed"]

    static func main() async throws {
        let socket = getenv("BATON_SOCKET").map { String(cString: $0) } ?? "baton-data/baton.sock"
        let failOnceAt = getenv("FAIL_ONCE_AT").map { String(cString: $0) }
        let logger = Logger(label: "document-pipeline")
        let client = BatonClient(socketPath: socket)

        let worker = Worker(client: client, configuration: .init(queues: ["documents"], concurrency: 4)) { job in
            let document = try job.payload(as: Document.self)
            var progress = try job.resumeState(as: Progress.self) ?? Progress(done: [])
            for stage in stages where !progress.done.contains(stage) {
                if stage == failOnceAt, job.attempt == 1 {
                    struct StageFailed: Error { var stage: String }
                    throw StageFailed(stage: stage)
                }
                try await Task.sleep(for: .milliseconds(50))  // the paid work of this stage
                progress.done.append(stage)
                try await job.checkpoint(progress)
                logger.info("stage done", metadata: ["document": "\(document.name)", "stage": "\(stage)"])
            }
        }
        let group = ServiceGroup(services: [worker], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        try await group.run()
        await client.close()
    }
}

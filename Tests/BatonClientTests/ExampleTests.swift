import BatonClient
import BatonTestSupport
import Foundation
import Testing

@Suite("The example worker")
struct ExampleTests {
    @Test("document-pipeline resumes a failed document after its last finished stage")
    func documentPipelineResumes() async throws {
        let server = try TestServer()
        let log = server.directory.appendingPathComponent("pipeline.log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: TestServer.builtExecutable(named: "document-pipeline"))
        process.environment = ProcessInfo.processInfo.environment.merging(
            ["BATON_SOCKET": server.socketPath, "FAIL_ONCE_AT": "embed"]
        ) { $1 }
        let handle = try FileHandle(forWritingTo: log)
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        defer { if process.isRunning { process.terminate() } }

        try await withClient(of: server) { client in
            var ids: [Int64] = []
            for name in ["novel.epub", "play.pdf"] {
                ids.append(try await client.enqueue(queue: "documents", payload: ["name": name]).jobID)
            }
            let finished = ids
            #expect(try await eventually(30) {
                for id in finished where try await client.job(id).state != .completed { return false }
                return true
            })
            for id in ids {
                let job = try await client.job(id)
                #expect(job.attempts == 2, "the first attempt failed at embed")
                #expect(job.lastError == nil && job.earlierError?.contains("embed") == true, "the failed attempt's error is an earlier one")
                #expect(job.checkpoint?.jsonText == #"{"done":["extract","chunk","embed"]}"#)
            }
        }
        process.terminate()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
        let output = try String(contentsOf: log, encoding: .utf8)
        // Each paid stage ran once per document, the retry included.
        for stage in ["extract", "chunk", "embed"] {
            let runs = output.components(separatedBy: "stage=\(stage)").count - 1
            #expect(runs == 2, "\(stage) ran \(runs) times:\n\(output)")
        }
    }
}

@Suite("The README")
struct ReadmeTests {
    @Test("the README's Swift worker is the compiled example, and under 30 lines")
    func workerSnippetIsCompiled() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let readme = try String(contentsOf: root.appendingPathComponent("README.md"), encoding: .utf8)
        let example = try String(contentsOf: root.appendingPathComponent("Examples/EmailWorker/EmailWorker.swift"), encoding: .utf8)
        #expect(readme.contains("```swift\n" + example + "```"))
        #expect(example.split(separator: "\n", omittingEmptySubsequences: false).count <= 30)
    }
}

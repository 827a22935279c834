import Foundation

/// A real `batond` process on a socket in a fresh temporary directory.
///
/// Integration tests start the built binary, exactly as an operator would, and talk to it
/// only over its socket. The store stays in the directory across ``restart(arguments:)``
/// and ``kill()``, so tests can check what survives.
public final class TestServer: @unchecked Sendable {
    // @unchecked: `process` is replaced only by the test that owns the server.

    public let directory: URL
    public let socketPath: String
    /// The store `batond` runs on: a SQLite file in ``directory``, or, when the tests run
    /// against PostgreSQL (``TestStore``), a `postgres://` URL of a database of its own.
    public let storePath: String
    public private(set) var arguments: [String]
    /// Extra environment variables for the server process.
    public var environment: [String: String]
    private var process: Process?
    private let logPath: String

    /// Whether the store is this server's own, removed with it.
    private let ownsStore: Bool

    /// Starts `batond` with extra command-line arguments and waits until it answers.
    ///
    /// - Parameter store: a store to run on that someone else owns (a database several
    ///   servers share); by default, a new one of the server's own (``TestStore``).
    public init(arguments: [String] = [], environment: [String: String] = [:], store: String? = nil) throws {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("batond-test-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        self.directory = directory
        self.socketPath = directory.appendingPathComponent("b.sock").path
        self.storePath = try store ?? TestStore.current.makeStore(in: directory)
        self.ownsStore = store == nil
        self.logPath = directory.appendingPathComponent("batond.log").path
        self.arguments = arguments
        self.environment = environment
        try self.start()
    }

    deinit {
        if let process, process.isRunning {
            Foundation.kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(at: self.directory)
        if self.ownsStore { TestStore.current.removeStore(self.storePath) }
    }

    /// The `batond` binary: `BATOND_PATH`, else the one built beside the test bundle.
    public static var binaryPath: String {
        ProcessInfo.processInfo.environment["BATOND_PATH"] ?? builtExecutable(named: "batond")
    }

    /// An executable of this package, from the build folder the tests run in.
    public static func builtExecutable(named name: String) -> String {
        let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
            ?? CommandLine.arguments[0]
        var directory = URL(fileURLWithPath: executable).deletingLastPathComponent()
        // The test runner may sit inside a bundle directory; the executables sit in the build folder.
        for _ in 0..<4 {
            let candidate = directory.appendingPathComponent(name).path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            directory = directory.deletingLastPathComponent()
        }
        return directory.appendingPathComponent(name).path
    }

    /// The process id of the running server.
    public var pid: Int32? { self.process?.processIdentifier }

    /// Everything the server has logged so far.
    public var log: String {
        (try? String(contentsOfFile: self.logPath, encoding: .utf8)) ?? ""
    }

    /// Starts the server and waits for its socket to answer.
    public func start() throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.binaryPath)
        process.arguments = ["--socket", self.socketPath, "--store", self.storePath] + self.arguments
        process.environment = ProcessInfo.processInfo.environment.merging(self.environment) { $1 }
        if !FileManager.default.fileExists(atPath: self.logPath) {
            _ = FileManager.default.createFile(atPath: self.logPath, contents: nil)
        }
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: self.logPath))
        log.seekToEndOfFile()
        process.standardOutput = log
        process.standardError = log
        try process.run()
        self.process = process
        try self.waitUntilReady()
    }

    private func waitUntilReady() throws {
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            if let process, !process.isRunning {
                throw TestServerError("batond exited with status \(process.terminationStatus) before it was ready:\n\(self.log)")
            }
            if let connection = try? LineConnection(path: self.socketPath) {
                _ = connection
                return
            }
            usleep(20_000)
        }
        throw TestServerError("batond did not answer on \(self.socketPath) within 20 s:\n\(self.log)")
    }

    /// A new connection to the server.
    public func connect(timeoutSeconds: Int = 30) throws -> JSONLineClient {
        JSONLineClient(connection: try LineConnection(path: self.socketPath, timeoutSeconds: timeoutSeconds))
    }

    /// Stops the server with SIGTERM and waits for it to exit.
    ///
    /// - Returns: the exit status.
    @discardableResult
    public func stop() -> Int32 {
        guard let process else { return -1 }
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
        self.process = nil
        return process.terminationStatus
    }

    /// Stops the server with SIGTERM, waiting at most `seconds` for it to exit, and kills it
    /// if it has not.
    ///
    /// - Returns: the exit status, or `nil` if it had to be killed.
    public func stop(within seconds: Double) -> Int32? {
        guard let process else { return -1 }
        if process.isRunning { process.terminate() }
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning, Date() < deadline { usleep(20_000) }
        guard !process.isRunning else {
            self.kill()
            return nil
        }
        self.process = nil
        return process.terminationStatus
    }

    /// Kills the server with SIGKILL: no chance to flush or close anything.
    public func kill() {
        guard let process else { return }
        Foundation.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        self.process = nil
    }

    /// Stops the server gracefully and starts it again on the same store and socket.
    public func restart(arguments: [String]? = nil) throws {
        self.stop()
        if let arguments { self.arguments = arguments }
        try self.start()
    }

    /// Runs another `batond` on this server's store and another socket, to completion, for
    /// tests of start-up failures.
    public func runSecondInstance(socketPath: String) throws -> (status: Int32, output: String) {
        try self.runSecondInstanceOnStore(storePath: self.storePath, socketPath: socketPath)
    }

    /// Runs another `batond` on the given store and socket, to completion.
    ///
    /// - Returns: its exit status and everything it printed.
    public func runSecondInstanceOnStore(storePath: String, socketPath: String) throws -> (status: Int32, output: String) {
        let run = try CommandRun.run(Self.binaryPath, ["--socket", socketPath, "--store", storePath], mergingErrors: true)
        return (run.status, run.output)
    }
}

public struct TestServerError: Error, CustomStringConvertible {
    public var description: String

    public init(_ description: String) {
        self.description = description
    }
}

/// The store the integration tests run `batond` on.
///
/// SQLite by default. With `BATON_TEST_STORE=postgres` and `BATON_TEST_POSTGRES` naming a
/// server (`scripts/test` starts a throwaway one and runs the suites both ways), each
/// ``TestServer`` gets a fresh database of its own there, dropped when it goes.
public enum TestStore: Sendable {
    case sqlite
    case postgres(server: String)

    public static let current: TestStore = {
        let environment = ProcessInfo.processInfo.environment
        guard environment["BATON_TEST_STORE"] == "postgres", let server = environment["BATON_TEST_POSTGRES"] else { return .sqlite }
        return .postgres(server: server)
    }()

    public var isPostgres: Bool {
        if case .postgres = self { return true }
        return false
    }

    /// A new, empty store for one server.
    public func makeStore(in directory: URL) throws -> String {
        switch self {
        case .sqlite:
            return directory.appendingPathComponent("store.sqlite").path
        case .postgres(let server):
            let name = "batond_test_\(UInt64.random(in: 0...UInt64.max))"
            try Self.psql(server, "CREATE DATABASE \(name)")
            return Self.url(server, database: name)
        }
    }

    public func removeStore(_ store: String) {
        guard case .postgres(let server) = self, let name = store.split(separator: "/").last?.split(separator: "?").first else { return }
        try? Self.psql(server, "DROP DATABASE IF EXISTS \(name) WITH (FORCE)")
    }

    /// `server`'s URL with another database.
    static func url(_ server: String, database: String) -> String {
        var components = URLComponents(string: server)!
        components.path = "/" + database
        return components.string!
    }

    /// Runs `statement` with psql against the database `url` names; its rows, unaligned.
    @discardableResult
    public static func psql(_ url: String, _ statement: String) throws -> String {
        let run = try CommandRun.run("/usr/bin/psql", [url, "-qAt", "-v", "ON_ERROR_STOP=1", "-c", statement], mergingErrors: true)
        guard run.status == 0 else { throw TestServerError("psql failed: \(statement): \(run.output)") }
        return run.output.trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

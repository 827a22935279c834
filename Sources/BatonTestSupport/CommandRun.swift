import Foundation

/// What a finished command printed, and how it exited.
public struct CommandRun: Sendable {
    public var status: Int32
    /// Standard output, or both streams when they were merged.
    public var output: String
    /// Standard error, when kept apart from the output.
    public var errors: String

    /// Runs `executable` to completion.
    ///
    /// - Parameters:
    ///   - environment: added to this process's environment.
    ///   - input: written to its standard input, which is then closed.
    ///   - directory: its working directory.
    ///   - mergingErrors: whether standard error goes to `output` too.
    public static func run(
        _ executable: String, _ arguments: [String], environment: [String: String] = [:], input: String? = nil,
        in directory: URL? = nil, mergingErrors: Bool = false
    ) throws -> CommandRun {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        if let directory { process.currentDirectoryURL = directory }
        let output = Pipe()
        let errors = mergingErrors ? output : Pipe()
        let standardInput = Pipe()
        process.standardOutput = output
        process.standardError = errors
        process.standardInput = standardInput
        try process.run()
        if let input { standardInput.fileHandleForWriting.write(Data(input.utf8)) }
        try standardInput.fileHandleForWriting.close()
        // Read the error stream on another thread, so that neither pipe fills while the
        // other is drained.
        let errorData = NSLockedData()
        let reader = Thread { if !mergingErrors { errorData.set(errors.fileHandleForReading.readDataToEndOfFile()) } }
        reader.start()
        let out = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        while !reader.isFinished { usleep(1_000) }
        return CommandRun(
            status: process.terminationStatus,
            output: String(decoding: out, as: UTF8.self),
            errors: String(decoding: errorData.get(), as: UTF8.self)
        )
    }
}

private final class NSLockedData: @unchecked Sendable {
    private let lock = NSLock()
    private var data = Data()

    func set(_ data: Data) { self.lock.withLock { self.data = data } }
    func get() -> Data { self.lock.withLock { self.data } }
}

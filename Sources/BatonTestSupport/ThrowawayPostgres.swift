import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A PostgreSQL server of a test's own (`scripts/postgres`), which it can take down and
/// bring back without disturbing the server the other tests share.
public struct ThrowawayPostgres: Sendable {
    static let script = URL(filePath: #filePath).deletingLastPathComponent().appending(path: "../../scripts/postgres").standardized.path

    public let directory: String
    /// The server's `postgres://` URL, on its `baton` database.
    public let url: String

    public static func start() throws -> ThrowawayPostgres {
        let directory = FileManager.default.temporaryDirectory.appending(path: "baton-pg-\(UInt32.random(in: 0...UInt32.max))").path
        try Self.run("start", directory)
        // Read from the file the script leaves: the server it starts inherits the script's
        // standard output, so a pipe would not reach its end while the server runs.
        let url = try String(contentsOfFile: directory + "/url", encoding: .utf8)
        return ThrowawayPostgres(directory: directory, url: url.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// Stops the server at once, as a crash would.
    public func down() throws { try Self.run("down", self.directory) }
    /// Starts it again on the same port.
    public func up() throws { try Self.run("up", self.directory) }
    public func remove() { try? Self.run("stop", self.directory) }

    /// Runs the script with `system`, which waits for the script alone: Foundation's
    /// `Process` would also wait for the server the script leaves running.
    private static func run(_ command: String, _ directory: String) throws {
        guard system("'\(Self.script)' \(command) '\(directory)' >/dev/null") == 0 else {
            throw TestServerError("scripts/postgres \(command) failed")
        }
    }
}

import ArgumentParser
import BatonClient
import BatonProtocol
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// `baton`: Baton from a terminal or a shell script.
@main
struct Baton: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "baton",
        abstract: "Enqueue, inspect and work on Baton jobs from a terminal or a script.",
        discussion: """
            The socket is --socket, else $BATON_SOCKET, else baton-data/baton.sock.

            Exit status: 0 done; 1 batond refused the request (its error code is printed); \
            2 no job (claim got none); 3 batond cannot be reached; 64 bad usage.
            """,
        version: "0.1.0",
        subcommands: [
            Enqueue.self, Get.self, List.self, Stats.self, Cancel.self, Pause.self, Resume.self, Retry.self, Purge.self, SetPriority.self,
            PauseQueue.self, ResumeQueue.self, SetQueue.self, Events.self, Workers.self, Health.self, Top.self, Claim.self,
            Heartbeat.self, Complete.self, Fail.self, Release.self, Backup.self, Schedule.self, Unschedule.self, Schedules.self,
            SetLimit.self, Limits.self,
        ]
    )
}

/// The options every subcommand takes.
struct ConnectionOptions: ParsableArguments {
    @Option(name: .long, help: "The batond socket (default: $BATON_SOCKET, else baton-data/baton.sock).")
    var socket: String?

    @Flag(name: .long, help: "Print JSON for programs instead of text for people.")
    var json = false

    var socketPath: String {
        ClientContract.socketPath(explicit: self.socket, environment: ProcessInfo.processInfo.environment)
    }

    /// Runs `body` with a client, turning failures into the documented exit codes.
    func withClient<T>(_ body: (BatonClient) async throws -> T) async throws -> T {
        let client = BatonClient(
            configuration: BatonClient.Configuration(socketPath: self.socketPath, reconnectTimeout: .seconds(2))
        )
        defer { _ = client }
        do {
            let value = try await body(client)
            await client.close()
            return value
        } catch let error as BatonError {
            await client.close()
            printError("baton: \(error.code.wireValue): \(error.message)")
            throw ExitCode(1)
        } catch let error as BatonConnectionError {
            await client.close()
            printError("baton: \(error.message)")
            throw ExitCode(3)
        }
    }
}

func printError(_ message: String) {
    var standardError = StandardError()
    print(message, to: &standardError)
}

private struct StandardError: TextOutputStream {
    mutating func write(_ string: String) {
        var string = string
        string.withUTF8 { bytes in _ = Glibc.write(2, bytes.baseAddress, bytes.count) }
    }
}

/// A JSON argument, checked before anything is sent.
func parseJSON(_ text: String, what: String) throws -> JSONValue {
    do {
        return try JSONValue(parsing: text)
    } catch {
        throw ValidationError("\(what) is not valid JSON: \(error)")
    }
}

/// Reads all of standard input, for `-` arguments.
func readStandardInput() -> String {
    var text = ""
    while let line = readLine(strippingNewline: false) {
        text += line
    }
    return text
}

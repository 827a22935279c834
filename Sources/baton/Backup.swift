import ArgumentParser
import BatonClient
import BatonProtocol
import Foundation

struct Backup: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a consistent copy of batond's store to FILE, while it serves.",
        discussion: """
            batond writes FILE itself (as its own user, mode 0600), a few pages at a time between \
            requests, and answers once the copy is complete and synced. FILE must not exist. \
            To restore, stop batond and start it with --store FILE (or copy FILE over the store).
            """
    )

    @OptionGroup var connection: ConnectionOptions

    @Argument(help: "Where the copy goes; a relative path is taken from this directory.")
    var file: String

    func run() async throws {
        let path = URL(fileURLWithPath: self.file, relativeTo: URL(fileURLWithPath: FileManager.default.currentDirectoryPath))
            .standardizedFileURL.path
        let info = try await self.connection.withClient { client in try await client.backup(to: path) }
        if self.connection.json {
            var writer = JSONWriter()
            writer.beginObject()
            writer.member("path", info.path)
            writer.member("bytes", info.bytes)
            writer.member("ms", info.milliseconds)
            writer.endObject()
            print(writer.text)
        } else {
            print("\(info.path): \(info.bytes) bytes in \(info.milliseconds) ms")
        }
    }
}

import BatonProtocol
import BatonTestSupport
import Foundation
import Testing

/// Replays every conformance vector in `protocol/vectors` (format: its README) against the
/// real batond, so the Swift side is held to the same text as every other client.
@Suite("The protocol's conformance vectors")
struct ConformanceVectorTests {
    static let directory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("protocol/vectors")

    static var names: [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: Self.directory.path)) ?? [])
            .filter { $0.hasSuffix(".txt") }.sorted()
    }

    @Test("the vectors are there to replay")
    func vectorsExist() {
        #expect(Self.names.count >= 10, "no vectors found in \(Self.directory.path)")
    }

    @Test("replays", arguments: Self.names)
    func replay(name: String) throws {
        let vector = try Vector(contentsOf: Self.directory.appendingPathComponent(name))
        let server = try TestServer(arguments: vector.flags)
        var replay = Replay(socketPath: server.socketPath, file: name)
        for step in vector.steps {
            try replay.run(step)
        }
        for (connection, left) in replay.received where !left.isEmpty {
            Issue.record("\(name): replies never matched on \(connection): \(left.map(\.jsonText))")
        }
    }
}

/// One vector file, parsed.
private struct Vector {
    enum Step {
        case send(line: Int, connection: String, text: String)
        case expect(line: Int, connection: String, reply: JSONValue)
        case sleep(milliseconds: Int)
        case closed(line: Int, connection: String)
    }

    var flags: [String] = []
    var steps: [Step] = []

    init(contentsOf url: URL) throws {
        let text = try String(contentsOf: url, encoding: .utf8)
        for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let number = index + 1
            let line = String(line)
            if line.trimmingCharacters(in: .whitespaces).isEmpty || line.hasPrefix("#") { continue }
            if line.hasPrefix("! ") {
                self.flags += line.dropFirst(2).split(separator: " ").map(String.init)
            } else if line.hasPrefix("= sleep ") {
                self.steps.append(.sleep(milliseconds: Int(line.dropFirst("= sleep ".count)) ?? 0))
            } else if line == "= closed" || line.hasPrefix("= closed ") {
                let name = line.dropFirst("= closed".count).trimmingCharacters(in: .whitespaces)
                self.steps.append(.closed(line: number, connection: name.isEmpty ? "a" : name))
            } else if let marker = line.firstIndex(where: { $0 == ">" || $0 == "<" }),
                line[marker...].hasPrefix("> ") || line[marker...].hasPrefix("< "),
                line[..<marker].allSatisfy({ $0.isLowercase })
            {
                let connection = line[..<marker].isEmpty ? "a" : String(line[..<marker])
                let text = String(line[line.index(marker, offsetBy: 2)...])
                if line[marker] == ">" {
                    self.steps.append(.send(line: number, connection: connection, text: text))
                } else {
                    self.steps.append(.expect(line: number, connection: connection, reply: try JSONValue(parsing: text)))
                }
            } else {
                throw TestServerError("\(url.lastPathComponent):\(number): not a step")
            }
        }
    }
}

/// A replay in progress: its connections, the replies read but not yet matched, and the
/// values the placeholders captured.
private struct Replay {
    let socketPath: String
    let file: String
    var connections: [String: LineConnection] = [:]
    var received: [String: [JSONValue]] = [:]
    var captured: [String: JSONValue] = [:]

    init(socketPath: String, file: String) {
        self.socketPath = socketPath
        self.file = file
    }

    mutating func run(_ step: Vector.Step) throws {
        switch step {
        case .sleep(let milliseconds):
            usleep(UInt32(milliseconds) * 1_000)
        case .send(_, let name, let text):
            try self.connection(name).send(self.substitute(text) + "\n")
        case .expect(let line, let name, let expected):
            var wanted: JSONValue? = nil
            if case .object(let fields) = expected, let id = fields["id"], id != .null, !Self.isPlaceholder(id) {
                wanted = id
            }
            let reply = try self.take(from: name, id: wanted, at: line)
            var problems: [String] = []
            self.match(expected, reply, at: "\(self.file):\(line)", problems: &problems)
            for problem in problems { Issue.record("\(problem)\n  reply: \(reply.jsonText)") }
        case .closed(let line, let name):
            #expect(self.received[name, default: []].isEmpty, "\(self.file):\(line): unmatched replies before the close")
            let connection = try self.connection(name)
            do {
                let extra = try connection.readLine()
                Issue.record("\(self.file):\(line): expected the server to close the connection, got \(extra)")
            } catch LineConnection.Failure.closed {
            } catch LineConnection.Failure.io(let code) where code == ECONNRESET {
            }
        }
    }

    private mutating func connection(_ name: String) throws -> LineConnection {
        if let connection = self.connections[name] { return connection }
        let connection = try LineConnection(path: self.socketPath, timeoutSeconds: 10)
        self.connections[name] = connection
        return connection
    }

    /// The reply with `id` (or the earliest unmatched one when `id` is nil), reading more
    /// from the connection until it arrives.
    private mutating func take(from name: String, id: JSONValue?, at line: Int) throws -> JSONValue {
        while true {
            let waiting = self.received[name, default: []]
            if let index = waiting.firstIndex(where: { reply in
                guard let id else { return true }
                if case .object(let fields) = reply { return fields["id"] == id }
                return false
            }) {
                return self.received[name]!.remove(at: index)
            }
            let text = try self.connection(name).readLine()
            self.received[name, default: []].append(try JSONValue(parsing: text))
        }
    }

    private func substitute(_ text: String) -> String {
        var result = ""
        var index = text.startIndex
        while index < text.endIndex {
            if text[index] == "$" {
                let nameStart = text.index(after: index)
                let nameEnd = text[nameStart...].firstIndex { !($0.isLetter || $0.isNumber || $0 == "_") } ?? text.endIndex
                let name = String(text[nameStart..<nameEnd])
                if let value = self.captured[name] {
                    result += value.jsonText
                    index = nameEnd
                    continue
                }
            }
            result.append(text[index])
            index = text.index(after: index)
        }
        return result
    }

    private static func isPlaceholder(_ value: JSONValue) -> Bool {
        if case .string(let text) = value { return text == "*" || text.hasPrefix("$") }
        return false
    }

    private mutating func match(_ expected: JSONValue, _ actual: JSONValue, at path: String, problems: inout [String]) {
        if case .string(let text) = expected {
            if text == "*" { return }
            if text.hasPrefix("$") {
                let name = String(text.dropFirst())
                if let known = self.captured[name] {
                    if known != actual { problems.append("\(path): expected $\(name) = \(known.jsonText), got \(actual.jsonText)") }
                } else {
                    self.captured[name] = actual
                }
                return
            }
        }
        switch (expected, actual) {
        case (.object(let want), .object(let got)):
            guard Set(want.keys) == Set(got.keys) else {
                problems.append("\(path): keys \(got.keys.sorted()), expected \(want.keys.sorted())")
                return
            }
            for key in want.keys.sorted() {
                self.match(want[key]!, got[key]!, at: "\(path).\(key)", problems: &problems)
            }
        case (.array(let want), .array(let got)) where want.count == got.count:
            for (index, item) in want.enumerated() {
                self.match(item, got[index], at: "\(path)[\(index)]", problems: &problems)
            }
        default:
            if expected != actual { problems.append("\(path): \(actual.jsonText), expected \(expected.jsonText)") }
        }
    }
}

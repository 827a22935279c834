/// Markup whose interpolated text is escaped: `"<td>\(name)</td>" as HTML` writes a queue
/// named `<script>` as text, never as a tag. Only another ``HTML`` is inserted as it is.
struct HTML: ExpressibleByStringInterpolation, Sendable {
    private(set) var text: String

    init(stringLiteral value: String) {
        self.text = value
    }

    init(stringInterpolation: Interpolation) {
        self.text = stringInterpolation.text
    }

    init(joining parts: some Sequence<HTML>) {
        self.text = parts.reduce(into: "") { $0 += $1.text }
    }

    struct Interpolation: StringInterpolationProtocol {
        var text = ""

        init(literalCapacity: Int, interpolationCount: Int) {
            self.text.reserveCapacity(literalCapacity + interpolationCount * 16)
        }

        mutating func appendLiteral(_ literal: String) {
            self.text += literal
        }

        mutating func appendInterpolation(_ value: String) {
            HTML.escape(value, into: &self.text)
        }

        mutating func appendInterpolation(_ value: some BinaryInteger) {
            self.text += String(value)
        }

        mutating func appendInterpolation(_ html: HTML) {
            self.text += html.text
        }

        mutating func appendInterpolation(_ parts: [HTML]) {
            for part in parts { self.text += part.text }
        }
    }

    static func escape(_ value: String, into text: inout String) {
        for character in value.unicodeScalars {
            switch character {
            case "&": text += "&amp;"
            case "<": text += "&lt;"
            case ">": text += "&gt;"
            case "\"": text += "&quot;"
            case "'": text += "&#39;"
            default: text.unicodeScalars.append(character)
            }
        }
    }
}

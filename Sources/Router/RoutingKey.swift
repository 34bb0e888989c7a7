import Foundation

/// The text a request's prompt begins with, as the router compares prompts: the model, then
/// what the replica will put first in its KV cache (instructions, tools, messages in order,
/// or the prompt). Two requests whose keys share a prefix share a prefix of KV on a replica,
/// so the router can route by text without the replica's tokenizer or chat template (as
/// SGLang's router does).
public enum RoutingKey {
    /// The key of a request's JSON body (nil: a body that is no JSON object, keyed by nothing).
    public static func of(_ object: [String: Any]?) -> [UInt8] {
        guard let object else { return [] }
        var key = "\(object["model"] as? String ?? "")\u{1F}"
        if let tools = object["tools"], let data = try? JSONSerialization.data(withJSONObject: tools, options: .sortedKeys) {
            key += String(decoding: data, as: UTF8.self) + "\u{1F}"
        }
        if let instructions = object["instructions"] as? String { key += instructions + "\u{1E}" }
        if let messages = object["messages"] as? [Any] {
            for case let message as [String: Any] in messages {
                key += "\(message["role"] as? String ?? "")\u{1D}\(text(message["content"]))\u{1E}"
            }
        }
        if let input = object["input"] {
            if let items = input as? [Any] {
                for case let item as [String: Any] in items { key += "\(item["role"] as? String ?? "")\u{1D}\(text(item["content"]))\u{1E}" }
            } else {
                key += text(input)
            }
        }
        if let prompt = object["prompt"] { key += text(prompt) }
        return Array(key.utf8)
    }

    /// A content field as text: a string, the text parts of a list of parts, or token ids.
    private static func text(_ value: Any?) -> String {
        switch value {
        case let s as String: return s
        case let parts as [Any]:
            return parts.map { part -> String in
                if let part = part as? [String: Any] { return part["text"] as? String ?? "" }
                if let s = part as? String { return s }
                if let n = part as? NSNumber { return "\(n.intValue) " }
                return ""
            }.joined()
        default: return ""
        }
    }
}

import AsyncHTTPClient
import Foundation
import Hummingbird
import NIOCore
import NIOHTTP1
import Server

extension Router {
    /// Disaggregated prefill (DistServe, Splitwise): a prefill worker computes the request's
    /// prompt and streams its KV blocks, block by block as its chunks finish, and the router
    /// streams them on into the decode replica's prefix cache, so that transfer overlaps
    /// compute and the replica's decoding never waits behind a long prompt. The router then
    /// sends the request to that replica as usual, which finds the prompt cached. Whatever
    /// goes wrong here (no prefill worker, one refusing or failing, a broken transfer) only
    /// costs the replica computing the prompt itself, so it is counted and logged, never
    /// the client's error.
    func prefill(_ request: Request, body: ByteBuffer, key: [UInt8], model: String?, into decode: String, channel: any Channel) async {
        guard let prefillWorkers else { return }
        var tried = Set<String>()
        while channel.isActive, let url = prefillWorkers.choose(key: key, excluding: tried) {
            tried.insert(url)
            let outcome = await transfer(request, body: body, from: url, model: model, into: decode, channel: channel)
            prefillWorkers.finished(url)
            metrics.countPrefill(outcome)
            switch outcome {
            case .imported: return
            case .prefillFailed(let why):
                // The client left: nobody failed.
                guard channel.isActive else { return }
                // A worker that cannot be reached: another one may compute the prompt.
                prefillWorkers.markFailed(url)
                logger.warning("prefill worker \(url) failed (\(why)); trying another")
            case .refused(let why), .transferFailed(let why):
                logger.warning("prefill of a request on \(url) for \(decode) did not arrive (\(why)); \(decode) computes the prompt")
                return
            }
        }
    }

    enum PrefillOutcome {
        case imported(blocks: Int)
        /// The prefill worker could not be reached or failed before answering.
        case prefillFailed(String)
        /// A worker answered with an error (a request it cannot export, a model mismatch).
        case refused(String)
        /// The blocks broke off on the way, or the decode replica could not take them.
        case transferFailed(String)
    }

    private func transfer(_ request: Request, body: ByteBuffer, from prefill: String, model: String?, into decode: String,
                          channel: any Channel) async -> PrefillOutcome {
        var export = HTTPClientRequest(url: prefill + request.uri.description)
        export.method = .POST
        for field in request.headers where !Self.hopByHop.contains(field.name.canonicalName) && field.name.canonicalName != "accept" {
            export.headers.add(name: field.name.rawName, value: field.value)
        }
        export.headers.remove(name: APIServer.tokenIDsHeader)
        export.headers.add(name: APIServer.kvExportHeader, value: "1")
        export.body = .bytes(body)
        let client = self.client
        let exported: HTTPClientResponse
        do {
            exported = try await cancellable(channel) { [export] in try await client.execute(export, deadline: .distantFuture) }
        } catch {
            return .prefillFailed("\(error)")
        }
        guard exported.status == .ok else {
            return .refused("\(prefill) answered \(exported.status.code): \(await Self.errorMessage(exported))")
        }
        var query = ""
        if let model, let encoded = model.addingPercentEncoding(withAllowedCharacters: .urlQueryAllowed.subtracting(CharacterSet(charactersIn: "&=+"))) {
            query = "?model=" + encoded
        }
        var importing = HTTPClientRequest(url: decode + APIServer.kvImportPath + query)
        importing.method = .POST
        if let authorization = request.headers[.authorization] { importing.headers.add(name: "authorization", value: authorization) }
        importing.headers.add(name: "content-type", value: APIServer.kvContentType)
        importing.body = .stream(exported.body, length: .unknown)
        do {
            let imported = try await cancellable(channel) { [importing] in try await client.execute(importing, deadline: .distantFuture) }
            guard imported.status == .ok else {
                return .refused("\(decode) answered \(imported.status.code): \(await Self.errorMessage(imported))")
            }
            let answer = try await imported.body.collect(upTo: 1 << 16)
            let json = (try? JSONSerialization.jsonObject(with: Data(buffer: answer))) as? [String: Any]
            return .imported(blocks: json?["imported_blocks"] as? Int ?? 0)
        } catch {
            return .transferFailed("\(error)")
        }
    }

    /// `work`, cancelled when the client's connection closes.
    private func cancellable<T: Sendable>(_ channel: any Channel, _ work: @escaping @Sendable () async throws -> T) async throws -> T {
        let pending = PendingForward(Task { try await work() })
        channel.closeFuture.whenComplete { _ in pending.cancel() }
        defer { pending.done() }
        return try await withTaskCancellationHandler { try await pending.value() } onCancel: { pending.cancel() }
    }

    /// The message of an OpenAI-style error answer, or its status.
    static func errorMessage(_ response: HTTPClientResponse) async -> String {
        let text = (try? await response.body.collect(upTo: 1 << 20)).map { String(buffer: $0) } ?? ""
        let json = (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any]
        return (json?["error"] as? [String: Any])?["message"] as? String ?? "status \(response.status.code)"
    }
}

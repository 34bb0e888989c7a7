import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// Copies a URL to a file in chunks, reporting progress.
enum Downloader {
    static func fetch(_ url: URL, to destination: URL, progress: ProgressDisplay) throws {
        if url.isFileURL {
            try copyFile(url, to: destination, progress: progress)
        } else if url.scheme == "https" || url.scheme == "http" {
            try download(url, to: destination, progress: progress)
        } else {
            throw ModelStoreError.fetchFailed("unsupported URL scheme in \(url.absoluteString)")
        }
    }

    private static func copyFile(_ url: URL, to destination: URL, progress: ProgressDisplay) throws {
        guard let input = FileHandle(forReadingAtPath: url.path) else { throw ModelStoreError.fetchFailed("cannot read \(url.path)") }
        defer { try? input.close() }
        let total = (try? FileManager.default.attributesOfItem(atPath: url.path)[.size] as? Int64) ?? nil
        guard FileManager.default.createFile(atPath: destination.path, contents: nil) else {
            throw ModelStoreError.fetchFailed("cannot create \(destination.path)")
        }
        let output = try FileHandle(forWritingTo: destination)
        defer { try? output.close() }
        var done: Int64 = 0
        while let chunk = try input.read(upToCount: 1 << 22), !chunk.isEmpty {
            try output.write(contentsOf: chunk)
            done += Int64(chunk.count)
            progress.update(done: done, total: total)
        }
        if done == 0 { progress.update(done: 0, total: 0) }
    }

    /// Streams an HTTP(S) body to `destination`; redirects (as Hugging Face uses) are followed.
    private static func download(_ url: URL, to destination: URL, progress: ProgressDisplay) throws {
        guard FileManager.default.createFile(atPath: destination.path, contents: nil) else {
            throw ModelStoreError.fetchFailed("cannot create \(destination.path)")
        }
        let output = try FileHandle(forWritingTo: destination)
        defer { try? output.close() }
        let delegate = StreamingDelegate(output: output, progress: progress)
        let session = URLSession(configuration: .default, delegate: delegate, delegateQueue: nil)
        session.dataTask(with: url).resume()
        delegate.finished.wait()
        session.finishTasksAndInvalidate()
        if let failure = delegate.failure { throw ModelStoreError.fetchFailed(failure) }
    }
}

private final class StreamingDelegate: NSObject, URLSessionDataDelegate, @unchecked Sendable {
    let output: FileHandle
    let progress: ProgressDisplay
    let finished = DispatchSemaphore(value: 0)
    var failure: String?
    var done: Int64 = 0
    var total: Int64?

    init(output: FileHandle, progress: ProgressDisplay) {
        self.output = output
        self.progress = progress
    }

    func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive response: URLResponse,
                    completionHandler: @escaping (URLSession.ResponseDisposition) -> Void) {
        if let http = response as? HTTPURLResponse, !(200..<300).contains(http.statusCode) {
            failure = "HTTP status \(http.statusCode) for \(response.url?.absoluteString ?? "")"
            completionHandler(.cancel)
            return
        }
        total = response.expectedContentLength > 0 ? response.expectedContentLength : nil
        completionHandler(.allow)
    }

    func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive data: Data) {
        do {
            try output.write(contentsOf: data)
            done += Int64(data.count)
            progress.update(done: done, total: total)
        } catch {
            failure = "cannot write the download: \(error)"
            dataTask.cancel()
        }
    }

    func urlSession(_ session: URLSession, task: URLSessionTask, didCompleteWithError error: Error?) {
        if let error, failure == nil { failure = error.localizedDescription }
        finished.signal()
    }
}

#include "common.h"

#include <chrono>
#include <cinttypes>
#include <cstring>

#if defined(__linux__) || defined(__APPLE__)
#include <sys/resource.h>
#include <unistd.h>
#endif

namespace st {

std::string json_escape(const std::string & s) {
    std::string out;
    out.reserve(s.size() + 2);
    for (unsigned char c : s) {
        switch (c) {
            case '"':  out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            default:
                if (c < 0x20) {
                    char buf[8];
                    snprintf(buf, sizeof(buf), "\\u%04x", c);
                    out += buf;
                } else {
                    out += (char) c;
                }
        }
    }
    return out;
}

void JsonLine::key(const char * k) {
    if (buf_.size() > 1) buf_ += ',';
    buf_ += '"';
    buf_ += json_escape(k);
    buf_ += "\":";
}

JsonLine & JsonLine::str(const char * k, const std::string & value) {
    key(k);
    buf_ += '"';
    buf_ += json_escape(value);
    buf_ += '"';
    return *this;
}

JsonLine & JsonLine::num(const char * k, double value) {
    key(k);
    if (!std::isfinite(value)) {
        buf_ += "null";
    } else {
        char buf[32];
        snprintf(buf, sizeof(buf), "%.9g", value);
        buf_ += buf;
    }
    return *this;
}

JsonLine & JsonLine::integer(const char * k, int64_t value) {
    key(k);
    char buf[32];
    snprintf(buf, sizeof(buf), "%" PRId64, value);
    buf_ += buf;
    return *this;
}

JsonLine & JsonLine::boolean(const char * k, bool value) {
    key(k);
    buf_ += value ? "true" : "false";
    return *this;
}

void JsonLine::print() {
    buf_ += "}\n";
    fputs(buf_.c_str(), stdout);
    fflush(stdout);
}

uint64_t fnv1a64(const void * data, size_t n, uint64_t h) {
    const unsigned char * p = (const unsigned char *) data;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

bool file_fingerprint(const std::string & path, uint64_t & out) {
    FILE * f = fopen(path.c_str(), "rb");
    if (!f) return false;
    std::vector<unsigned char> buf(1 << 20);
    uint64_t h = 0xcbf29ce484222325ULL;
    uint64_t size = 0;
    size_t n;
    while ((n = fread(buf.data(), 1, buf.size(), f)) > 0) {
        h = fnv1a64(buf.data(), n, h);
        size += n;
    }
    const bool ok = !ferror(f);
    fclose(f);
    out = h ^ (size * 0x9e3779b97f4a7c15ULL);
    return ok;
}

std::vector<int64_t> shuffled_indices(int64_t n, uint64_t seed, uint64_t stream) {
    std::vector<int64_t> idx(n);
    for (int64_t i = 0; i < n; i++) idx[i] = i;
    Rng rng(seed * 0x2545f4914f6cdd1dULL + stream + 1);
    for (int64_t i = n - 1; i > 0; i--) {
        const int64_t j = (int64_t) rng.below((uint64_t) i + 1);
        std::swap(idx[i], idx[j]);
    }
    return idx;
}

double now_seconds() {
    using namespace std::chrono;
    return duration<double>(steady_clock::now().time_since_epoch()).count();
}

double peak_rss_mb() {
#if defined(__linux__)
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
    return ru.ru_maxrss / 1024.0; // KiB on Linux
#elif defined(__APPLE__)
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
    return ru.ru_maxrss / (1024.0 * 1024.0); // bytes on macOS
#else
    return 0;
#endif
}

size_t current_rss_bytes() {
#if defined(__linux__)
    FILE * f = fopen("/proc/self/statm", "r");
    if (!f) return 0;
    unsigned long long size = 0, resident = 0;
    const int n = fscanf(f, "%llu %llu", &size, &resident);
    fclose(f);
    return n == 2 ? (size_t) resident * (size_t) sysconf(_SC_PAGESIZE) : 0;
#else
    return (size_t) (peak_rss_mb() * 1024 * 1024);
#endif
}

} // namespace st

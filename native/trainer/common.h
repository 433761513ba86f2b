// Small helpers shared by the trainer's parts: JSON lines on stdout, hashing, a seeded
// random generator that gives the same numbers on every platform.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace st {

// One JSON object per line on stdout, flushed at once (the TypeScript side reads them
// as they come). Numbers that are not finite are written as null.
class JsonLine {
public:
    JsonLine & str(const char * key, const std::string & value);
    JsonLine & num(const char * key, double value);
    JsonLine & integer(const char * key, int64_t value);
    JsonLine & boolean(const char * key, bool value);
    void print();

private:
    void key(const char * k);
    std::string buf_ = "{";
};

std::string json_escape(const std::string & s);

// FNV-1a over bytes, 64 bit: fingerprints of data files (not a security hash).
uint64_t fnv1a64(const void * data, size_t n, uint64_t h = 0xcbf29ce484222325ULL);

// Fingerprint of a file: its size and the FNV-1a hash of its bytes. Returns false when
// the file cannot be read.
bool file_fingerprint(const std::string & path, uint64_t & out);

// splitmix64: a tiny generator whose output does not depend on the C++ library.
struct Rng {
    uint64_t state;
    explicit Rng(uint64_t seed) : state(seed) {}
    uint64_t next() {
        uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        return z ^ (z >> 31);
    }
    // uniform in [0, 1)
    double uniform() { return (next() >> 11) * (1.0 / 9007199254740992.0); }
    // uniform in [0, n)
    uint64_t below(uint64_t n) { return n == 0 ? 0 : next() % n; }
};

// Fisher-Yates shuffle of 0..n-1 with a generator seeded from (seed, stream).
std::vector<int64_t> shuffled_indices(int64_t n, uint64_t seed, uint64_t stream);

double now_seconds();

// Peak resident set size of this process in MB (0 where unknown).
double peak_rss_mb();

// Resident set size of this process now, in bytes (0 where unknown).
size_t current_rss_bytes();

} // namespace st

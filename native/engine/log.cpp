#include "log.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "llama.h"

namespace still {

static std::atomic<int> g_level{0};
static thread_local LogCapture * t_capture = nullptr;
// llama.cpp logs a line in pieces (GGML_LOG_LEVEL_CONT); remember the level of the
// line in progress per thread, and its text for the capture.
static thread_local int t_line_level = GGML_LOG_LEVEL_INFO;
static thread_local std::string t_line;

static int level_from_env() {
    const char * v = std::getenv("STILL_LOG");
    if (v == nullptr) return 0;
    if (std::strcmp(v, "debug") == 0) return GGML_LOG_LEVEL_DEBUG;
    if (std::strcmp(v, "info") == 0) return GGML_LOG_LEVEL_INFO;
    if (std::strcmp(v, "warn") == 0) return GGML_LOG_LEVEL_WARN;
    if (std::strcmp(v, "error") == 0) return GGML_LOG_LEVEL_ERROR;
    return 0;
}

static void flush_line() {
    if (t_capture != nullptr && !t_line.empty()) {
        while (!t_line.empty() && (t_line.back() == '\n' || t_line.back() == ' ')) t_line.pop_back();
        if (!t_line.empty()) {
            if (t_line_level == GGML_LOG_LEVEL_ERROR) t_capture->errors.push_back(t_line);
            else if (t_line_level == GGML_LOG_LEVEL_WARN) t_capture->warnings.push_back(t_line);
        }
    }
    t_line.clear();
}

void log_callback_impl(int level, const char * text) {
    if (level != GGML_LOG_LEVEL_CONT) {
        flush_line();
        t_line_level = level;
    }
    const int shown = g_level.load(std::memory_order_relaxed);
    if (shown != 0 && t_line_level >= shown) {
        std::fputs(text, stderr);
        std::fflush(stderr);
    }
    if (t_capture != nullptr && t_line_level >= GGML_LOG_LEVEL_WARN) {
        t_line += text;
        if (!t_line.empty() && t_line.back() == '\n') flush_line();
    }
}

static void log_callback(ggml_log_level level, const char * text, void * /*user_data*/) {
    log_callback_impl(level, text);
}

void log_install() {
    static std::once_flag once;
    std::call_once(once, [] {
        g_level.store(level_from_env());
        llama_log_set(log_callback, nullptr);
    });
}

void log_set_level(int level) { g_level.store(level); }
int log_get_level() { return g_level.load(); }

LogCapture::LogCapture() : prev_(t_capture) { t_capture = this; }

LogCapture::~LogCapture() {
    flush_line();
    t_capture = prev_;
}

std::string LogCapture::summary() {
    if (t_capture == this) flush_line();
    const std::vector<std::string> & lines = errors.empty() ? warnings : errors;
    std::string out;
    for (const std::string & line : lines) {
        if (!out.empty()) out += "; ";
        out += line;
    }
    return out;
}

} // namespace still

// Routing of llama.cpp / ggml log output.
//
// By default nothing is printed: a library must not write to the user's stderr.
// STILL_LOG=debug|info|warn|error prints from that level up. Independently, a
// LogCapture on the current thread keeps the warnings and errors logged while it
// lives, so a failed call can say what llama.cpp reported.
#pragma once

#include <string>
#include <vector>

namespace still {

// Installs the log callback; idempotent. Reads STILL_LOG on first call.
void log_install();

// 0 = none, 1 = debug, 2 = info, 3 = warn, 4 = error (ggml_log_level values).
void log_set_level(int level);
int log_get_level();

class LogCapture {
public:
    LogCapture();
    ~LogCapture();
    LogCapture(const LogCapture &) = delete;
    LogCapture & operator=(const LogCapture &) = delete;

    // The error lines captured so far, joined by "; " (warnings if there were no errors).
    std::string summary();

    std::vector<std::string> errors;
    std::vector<std::string> warnings;

private:
    LogCapture * prev_;
    friend void log_callback_impl(int level, const char * text);
};

} // namespace still

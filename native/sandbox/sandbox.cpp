// still-sandbox: runs one untrusted program (a model's code under test) in Linux
// namespaces, with no network, no view of the host's files but read-only system folders,
// and resource limits. The TypeScript side (src/code/sandbox.ts) is its only caller.
//
//   still-sandbox --root EMPTY_DIR --code DIR [--ro PATH]... [limits] [--env K=V]... -- PROGRAM ARGS...
//
// Layout of the processes:
//   supervisor (this process, outside)   writes the user namespace's id maps, waits, reports
//   └─ init (PID 1 of new user, mount, network, PID, IPC and UTS namespaces)
//        builds the file system view, sets the limits, then waits for the program;
//        its exit kills everything left in the PID namespace (daemons included)
//        └─ program (the untrusted one): no capabilities, no_new_privs, a clean
//           environment, only fds 0-2
// The supervisor prints one JSON line on --status-fd (default 3): how the program ended,
// or which step of the set-up failed. Its own exit code is 0 when that line was written.

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

namespace {

struct Options {
    std::string root;                    // an empty folder: the new root's mount point
    std::string code;                    // mounted read-only at /code
    std::vector<std::string> ro;         // more read-only folders, at their own paths
    std::vector<std::string> env;        // the program's whole environment
    std::vector<char *> argv;            // the program and its arguments
    long cpu_s = 10;                     // RLIMIT_CPU (SIGKILL one second later)
    long long mem_bytes = 1LL << 30;     // RLIMIT_AS
    long long fsize_bytes = 16LL << 20;  // RLIMIT_FSIZE
    long long tmp_bytes = 64LL << 20;    // size of the /tmp tmpfs
    long nofile = 64;                    // RLIMIT_NOFILE
    long nproc = 64;                     // RLIMIT_NPROC (of the program's user)
    int status_fd = 3;
    std::string cwd = "/tmp";
};

// The program's ids, inside and outside. As root the supervisor maps the namespace's
// root to the machine's root for the set-up only, and the program runs as nobody, so it
// never holds the machine's root and RLIMIT_NPROC applies to it. Unprivileged, only the
// caller's own id can be mapped: the program keeps it, with every capability dropped.
constexpr uid_t kNobody = 65534;

struct Shared {
    Options * o;
    int sync_read;      // the supervisor closes its end once the id maps are written
    int sync_write;
    int report_read;
    int report_write;   // init writes the program's wait status, or a set-up error, here
    bool as_root;
};

[[noreturn]] void die_setup(int fd, const char * stage) {
    char buf[512];
    const int n = snprintf(buf, sizeof buf, "E%s: %s\n", stage, strerror(errno));
    if (n > 0) { ssize_t w = write(fd, buf, (size_t) n); (void) w; }
    _exit(127);
}

bool write_file(const std::string & path, const std::string & text) {
    const int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) return false;
    const bool ok = write(fd, text.data(), text.size()) == (ssize_t) text.size();
    close(fd);
    return ok;
}

bool is_dir(const std::string & p) {
    struct stat st;
    return stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// mkdir -p inside the new root (a tmpfs we own: 0755 folders)
bool make_dirs(const std::string & path) {
    std::string at;
    for (size_t i = 0; i <= path.size(); i++) {
        if (i == path.size() || path[i] == '/') {
            if (!at.empty() && mkdir(at.c_str(), 0755) != 0 && errno != EEXIST) return false;
        }
        if (i < path.size()) at += path[i];
    }
    return true;
}

// A bind mount takes its flags on a second call, which must keep the flags the host
// locked on it (a user namespace may not clear them).
bool remount_ro(const std::string & at, unsigned long extra) {
    struct statvfs st;
    if (statvfs(at.c_str(), &st) != 0) return false;
    unsigned long flags = MS_REMOUNT | MS_BIND | MS_RDONLY | extra;
    if (st.f_flag & ST_NOSUID) flags |= MS_NOSUID;
    if (st.f_flag & ST_NODEV) flags |= MS_NODEV;
    if (st.f_flag & ST_NOEXEC) flags |= MS_NOEXEC;
    if (st.f_flag & ST_NOATIME) flags |= MS_NOATIME;
    if (st.f_flag & ST_NODIRATIME) flags |= MS_NODIRATIME;
    if (st.f_flag & ST_RELATIME) flags |= MS_RELATIME;
    if (mount(nullptr, at.c_str(), nullptr, flags, nullptr) == 0) return true;
    // nodev cannot be added where the host's mount allows devices and locks that
    return (extra & MS_NODEV) != 0 && remount_ro(at, extra & ~MS_NODEV);
}

bool bind_ro(const std::string & from, const std::string & to, bool dir) {
    if (dir) {
        if (!make_dirs(to)) return false;
    } else {
        const size_t slash = to.rfind('/');
        if (slash != std::string::npos && !make_dirs(to.substr(0, slash))) return false;
        const int fd = open(to.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
        if (fd < 0) return false;
        close(fd);
    }
    if (mount(from.c_str(), to.c_str(), nullptr, MS_BIND | MS_REC, nullptr) != 0) return false;
    return remount_ro(to, MS_NOSUID | MS_NODEV);
}

// /bin, /lib… are links into /usr on merged systems, folders elsewhere
bool top_level(const std::string & root, const char * name) {
    const std::string host = std::string("/") + name;
    char target[256];
    const ssize_t n = readlink(host.c_str(), target, sizeof target - 1);
    if (n > 0) {
        target[n] = 0;
        return symlink(target, (root + host).c_str()) == 0;
    }
    if (!is_dir(host)) return true;
    return bind_ro(host, root + host, true);
}

void set_limit(int fd, int resource, rlim_t soft, rlim_t hard, const char * name) {
    struct rlimit r = {soft, hard};
    if (setrlimit(resource, &r) != 0) die_setup(fd, name);
}

void drop_bounding_set(int fd) {
    for (int cap = 0; cap <= 63; cap++) {
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL) die_setup(fd, "dropping capabilities");
    }
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
}

void drop_capabilities(int fd) {
    struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2] = {};
    if (syscall(SYS_capset, &header, data) != 0) die_setup(fd, "dropping capabilities");
}

// Everything but stdin, stdout, stderr and `keep` (close-on-exec) is closed.
void close_other_fds(int keep) {
    DIR * d = opendir("/proc/self/fd");
    std::vector<int> fds;
    if (d != nullptr) {
        while (dirent * e = readdir(d)) {
            const int fd = atoi(e->d_name);
            if (fd > 2 && fd != keep && fd != dirfd(d)) fds.push_back(fd);
        }
        closedir(d);
        for (int fd : fds) close(fd);
    } else {
        for (int fd = 3; fd < 1024; fd++) if (fd != keep) close(fd);
    }
}

// The program: runs as nobody (or the caller, capabilities dropped), in /tmp.
[[noreturn]] void exec_program(const Shared & s) {
    const Options & o = *s.o;
    const int fd = s.report_write;
    close_other_fds(fd);
    if (setsid() < 0) die_setup(fd, "setsid");
    drop_bounding_set(fd);
    if (s.as_root) {
        if (setgroups(0, nullptr) != 0) die_setup(fd, "setgroups");
        if (setresgid(kNobody, kNobody, kNobody) != 0) die_setup(fd, "setgid");
        if (setresuid(kNobody, kNobody, kNobody) != 0) die_setup(fd, "setuid");
    } else {
        drop_capabilities(fd);
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) die_setup(fd, "no_new_privs");
    if (chdir(o.cwd.c_str()) != 0) die_setup(fd, "chdir");
    std::vector<char *> envp;
    for (const std::string & e : o.env) envp.push_back(const_cast<char *>(e.c_str()));
    envp.push_back(nullptr);
    std::vector<char *> argv = o.argv;
    argv.push_back(nullptr);
    // the report pipe is close-on-exec: an exec that fails still tells why
    execve(argv[0], argv.data(), envp.data());
    die_setup(fd, "exec");
}

int init_main(void * arg) {
    Shared & s = *static_cast<Shared *>(arg);
    Options & o = *s.o;
    const int fd = s.report_write;
    // the supervisor gone (killed at the wall limit): the whole namespace goes with it
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0) die_setup(fd, "pdeathsig");
    close(s.sync_write);   // this copy of the fd table holds the supervisor's ends too
    close(s.report_read);
    char c;
    if (read(s.sync_read, &c, 1) != 0) die_setup(fd, "waiting for the id maps");
    close(s.sync_read);

    // --- the file system: a tmpfs root with read-only system folders -----------------
    if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) die_setup(fd, "making mounts private");
    const std::string root = o.root;
    if (mount("tmpfs", root.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, "size=16m,mode=0755") != 0) die_setup(fd, "mounting the root tmpfs");
    if (!bind_ro("/usr", root + "/usr", true)) die_setup(fd, "mounting /usr");
    for (const char * name : {"bin", "sbin", "lib", "lib32", "lib64", "libx32"}) {
        if (!top_level(root, name)) die_setup(fd, "linking a top-level folder");
    }
    if (!make_dirs(root + "/etc")) die_setup(fd, "making /etc");
    for (const char * f : {"/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/localtime", "/etc/nsswitch.conf"}) {
        struct stat st;
        if (stat(f, &st) == 0 && S_ISREG(st.st_mode) && !bind_ro(f, root + f, false)) die_setup(fd, "mounting /etc files");
    }
    if (is_dir("/etc/ld.so.conf.d") && !bind_ro("/etc/ld.so.conf.d", root + "/etc/ld.so.conf.d", true)) die_setup(fd, "mounting /etc/ld.so.conf.d");
    {
        // who the program is, for interpreters that look it up
        const std::string passwd = root + "/etc/passwd";
        const int p = open(passwd.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
        const char * text = "root:x:0:0:root:/tmp:/bin/sh\nnobody:x:65534:65534:nobody:/tmp:/bin/sh\n";
        if (p < 0 || write(p, text, strlen(text)) < 0) die_setup(fd, "writing /etc/passwd");
        close(p);
        const std::string group = root + "/etc/group";
        const int g = open(group.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
        const char * gtext = "root:x:0:\nnogroup:x:65534:\n";
        if (g < 0 || write(g, gtext, strlen(gtext)) < 0) die_setup(fd, "writing /etc/group");
        close(g);
    }
    for (const std::string & p : o.ro) {
        if (p.rfind("/usr/", 0) == 0 || p == "/usr") continue;
        if (!bind_ro(p, root + p, is_dir(p))) die_setup(fd, "mounting an interpreter's folder");
    }
    if (!bind_ro(o.code, root + "/code", true)) die_setup(fd, "mounting /code");

    // /dev: only the harmless character devices
    if (!make_dirs(root + "/dev")) die_setup(fd, "making /dev");
    if (mount("tmpfs", (root + "/dev").c_str(), "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,mode=0755") != 0) die_setup(fd, "mounting /dev");
    for (const char * dev : {"null", "zero", "random", "urandom"}) {
        const std::string host = std::string("/dev/") + dev;
        const std::string to = root + host;
        const int f = open(to.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0666);
        if (f < 0) die_setup(fd, "making /dev nodes");
        close(f);
        if (mount(host.c_str(), to.c_str(), nullptr, MS_BIND, nullptr) != 0) die_setup(fd, "mounting /dev nodes");
    }
    for (const char * link : {"/dev/fd", "/dev/stdin", "/dev/stdout", "/dev/stderr"}) {
        const char * target = strcmp(link, "/dev/fd") == 0 ? "/proc/self/fd" :
                               strcmp(link, "/dev/stdin") == 0 ? "/proc/self/fd/0" :
                               strcmp(link, "/dev/stdout") == 0 ? "/proc/self/fd/1" : "/proc/self/fd/2";
        if (symlink(target, (root + link).c_str()) != 0) die_setup(fd, "linking /dev/fd");
    }

    // /tmp: the program's only writable place, owned by it
    if (!make_dirs(root + "/tmp")) die_setup(fd, "making /tmp");
    {
        const std::string opts = "size=" + std::to_string(o.tmp_bytes) + ",mode=0700" +
            (s.as_root ? ",uid=65534,gid=65534" : "");
        if (mount("tmpfs", (root + "/tmp").c_str(), "tmpfs", MS_NOSUID | MS_NODEV, opts.c_str()) != 0) die_setup(fd, "mounting /tmp");
    }
    // a fresh /proc of this PID namespace (some containers forbid it: then there is none)
    if (make_dirs(root + "/proc") && mount("proc", (root + "/proc").c_str(), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0) {
        rmdir((root + "/proc").c_str());
    }

    // --- into the new root; the host's is detached ------------------------------------
    const std::string old = root + "/.old";
    if (mkdir(old.c_str(), 0700) != 0) die_setup(fd, "making the old root's mount point");
    if (syscall(SYS_pivot_root, root.c_str(), old.c_str()) != 0) die_setup(fd, "pivot_root");
    if (chdir("/") != 0) die_setup(fd, "chdir /");
    if (umount2("/.old", MNT_DETACH) != 0) die_setup(fd, "detaching the host's root");
    if (rmdir("/.old") != 0) die_setup(fd, "removing the old root's mount point");
    if (mount(nullptr, "/", nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, nullptr) != 0) die_setup(fd, "making the root read-only");
    if (sethostname("sandbox", 7) != 0) die_setup(fd, "sethostname");

    // --- limits (inherited by the program and everything it starts) --------------------
    set_limit(fd, RLIMIT_CPU, (rlim_t) o.cpu_s, (rlim_t) o.cpu_s + 1, "RLIMIT_CPU");
    set_limit(fd, RLIMIT_AS, (rlim_t) o.mem_bytes, (rlim_t) o.mem_bytes, "RLIMIT_AS");
    set_limit(fd, RLIMIT_FSIZE, (rlim_t) o.fsize_bytes, (rlim_t) o.fsize_bytes, "RLIMIT_FSIZE");
    set_limit(fd, RLIMIT_NOFILE, (rlim_t) o.nofile, (rlim_t) o.nofile, "RLIMIT_NOFILE");
    set_limit(fd, RLIMIT_CORE, 0, 0, "RLIMIT_CORE");
    set_limit(fd, RLIMIT_MEMLOCK, 0, 0, "RLIMIT_MEMLOCK");

    // --- the program, and init's one job: wait for it ----------------------------------
    const pid_t child = fork();
    if (child < 0) die_setup(fd, "fork");
    if (child == 0) {
        // the process limit is set here: init itself must not be counted out of its fork
        set_limit(fd, RLIMIT_NPROC, (rlim_t) o.nproc, (rlim_t) o.nproc, "RLIMIT_NPROC");
        signal(SIGPIPE, SIG_DFL);
        exec_program(s);
    }
    int status = 0;
    for (;;) {
        int st = 0;
        const pid_t done = waitpid(-1, &st, 0);
        if (done == child) { status = st; break; }
        if (done < 0 && errno != EINTR) break;   // reaps orphans the program left
    }
    char buf[32];
    const int n = snprintf(buf, sizeof buf, "S%d", status);
    ssize_t w = write(fd, buf, (size_t) n);
    (void) w;
    // leaving PID 1 kills every process left in the namespace
    return 0;
}

bool parse_size(const char * s, long long & out) {
    char * end = nullptr;
    errno = 0;
    const long long v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != 0 || v <= 0) return false;
    out = v;
    return true;
}

int usage(const char * why) {
    fprintf(stderr, "still-sandbox: error: %s\n"
        "usage: still-sandbox --root EMPTY_DIR --code DIR [--ro PATH]... [--cpu S] [--mem BYTES] [--fsize BYTES]\n"
        "       [--tmp-size BYTES] [--nofile N] [--nproc N] [--cwd DIR] [--status-fd N] [--env K=V]... -- PROGRAM ARGS...\n", why);
    return 2;
}

void report(int fd, const std::string & json) {
    const std::string line = json + "\n";
    ssize_t w = write(fd, line.data(), line.size());
    (void) w;
}

std::string quote(const std::string & s) {
    std::string q = "\"";
    for (char c : s) {
        if (c == '"' || c == '\\') { q += '\\'; q += c; }
        else if ((unsigned char) c < 0x20) q += ' ';
        else q += c;
    }
    return q + "\"";
}

}  // namespace

int main(int argc, char ** argv) {
    Options o;
    int i = 1;
    for (; i < argc; i++) {
        const std::string a = argv[i];
        if (a == "--") { i++; break; }
        if (i + 1 >= argc) return usage(("missing a value after " + a).c_str());
        const char * v = argv[++i];
        long long n = 0;
        if (a == "--root") o.root = v;
        else if (a == "--code") o.code = v;
        else if (a == "--ro") o.ro.push_back(v);
        else if (a == "--env") o.env.push_back(v);
        else if (a == "--cwd") o.cwd = v;
        else if (!parse_size(v, n)) return usage(("not a positive whole number: " + a + " " + v).c_str());
        else if (a == "--cpu") o.cpu_s = (long) n;
        else if (a == "--mem") o.mem_bytes = n;
        else if (a == "--fsize") o.fsize_bytes = n;
        else if (a == "--tmp-size") o.tmp_bytes = n;
        else if (a == "--nofile") o.nofile = (long) n;
        else if (a == "--nproc") o.nproc = (long) n;
        else if (a == "--status-fd") o.status_fd = (int) n;
        else return usage(("unknown option " + a).c_str());
    }
    for (; i < argc; i++) o.argv.push_back(argv[i]);
    if (o.root.empty() || o.code.empty()) return usage("--root and --code are required");
    if (o.argv.empty()) return usage("no program given after --");
    if (o.root[0] != '/' || o.code[0] != '/' || o.argv[0][0] != '/') return usage("--root, --code and the program need absolute paths");
    if (fcntl(o.status_fd, F_GETFD) < 0) return usage("the status fd is not open");

    int sync[2], rep[2];
    if (pipe2(sync, O_CLOEXEC) != 0 || pipe2(rep, O_CLOEXEC) != 0) {
        fprintf(stderr, "still-sandbox: error: pipe: %s\n", strerror(errno));
        return 1;
    }
    Shared s{&o, sync[0], sync[1], rep[0], rep[1], geteuid() == 0};
    const uid_t uid = geteuid();
    const gid_t gid = getegid();

    // --- the child in its new namespaces ------------------------------------------------
    const size_t stack_size = 1 << 20;
    std::vector<char> stack(stack_size);
    const int flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | SIGCHLD;
    const pid_t init = clone(init_main, stack.data() + stack_size, flags, &s);
    if (init < 0) {
        report(o.status_fd, "{\"status\":\"unavailable\",\"message\":" + quote(std::string("clone with new namespaces: ") + strerror(errno)) + "}");
        return 0;
    }
    close(sync[0]);
    close(rep[1]);

    // --- its id maps ---------------------------------------------------------------------
    const std::string proc = "/proc/" + std::to_string(init);
    bool mapped;
    if (s.as_root) {
        mapped = write_file(proc + "/uid_map", "0 0 1\n65534 65534 1\n") &&
                 write_file(proc + "/gid_map", "0 0 1\n65534 65534 1\n");
    } else {
        mapped = write_file(proc + "/setgroups", "deny") &&
                 write_file(proc + "/uid_map", "0 " + std::to_string(uid) + " 1\n") &&
                 write_file(proc + "/gid_map", "0 " + std::to_string(gid) + " 1\n");
    }
    if (!mapped) {
        const std::string why = strerror(errno);
        kill(init, SIGKILL);
        waitpid(init, nullptr, 0);
        report(o.status_fd, "{\"status\":\"unavailable\",\"message\":" + quote("writing the user namespace's id maps: " + why) + "}");
        return 0;
    }
    close(sync[1]);   // init goes on

    // --- what happened ----------------------------------------------------------------------
    std::string msg;
    char buf[600];
    for (;;) {
        const ssize_t n = read(rep[0], buf, sizeof buf);
        if (n > 0) { msg.append(buf, (size_t) n); continue; }
        if (n < 0 && errno == EINTR) continue;
        break;
    }
    int init_status = 0;
    while (waitpid(init, &init_status, 0) < 0 && errno == EINTR) {}

    if (msg.size() > 1 && msg[0] == 'S') {
        const int st = atoi(msg.c_str() + 1);
        if (WIFEXITED(st)) {
            report(o.status_fd, "{\"status\":\"exited\",\"code\":" + std::to_string(WEXITSTATUS(st)) + "}");
        } else {
            const int sig = WIFSIGNALED(st) ? WTERMSIG(st) : 0;
            report(o.status_fd, "{\"status\":\"signaled\",\"signal\":" + std::to_string(sig) + "}");
        }
        return 0;
    }
    if (msg.size() > 1 && msg[0] == 'E') {
        const std::string what = msg.substr(1, msg.find('\n') - 1);
        // an exec that failed is the program's problem; the rest is the sandbox's
        const bool exec = what.rfind("exec:", 0) == 0;
        report(o.status_fd, std::string("{\"status\":\"") + (exec ? "exec_failed" : "unavailable") + "\",\"message\":" + quote(what) + "}");
        return 0;
    }
    report(o.status_fd, "{\"status\":\"unavailable\",\"message\":" + quote("the sandbox's init ended without a report (status " + std::to_string(init_status) + ")") + "}");
    return 0;
}

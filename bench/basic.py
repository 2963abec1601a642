"""The "basic" row of bench/compare.py: both servers run Kamailio's own
example KEMI Lua script (../shared/compat/kamailio-basic-kemi-lua.lua),
unchanged.

Kamailio runs it with app_lua under a copy of its example cfg
(../shared/compat/kamailio-basic-kemi.cfg) that this module writes at run
time into the run's folder (the cfg is GPL text from the Kamailio project:
it is never copied into this repository). The copy differs from the file
only where a benchmark with no database on loopback needs it:

  * the forced `#!define WITH_MYSQL / WITH_AUTH / WITH_IPAUTH / WITH_USRLOCDB
    / WITH_NAT / WITH_ACCDB` lines are dropped (no database, no RTPProxy:
    db_mysql, auth, auth_db, permissions, nathelper and rtpproxy are not
    loaded, so KSR.auth, KSR.permissions, KSR.nathelper and KSR.rtpproxy are
    nil and the script skips those steps, as it does on our side, which has
    none of them); WITH_ANTIFLOOD stays (htable + pike);
  * `#!define WITH_CFGLUA` selects the cfg's own Lua block (KEMIENGINE
    "lua", app_lua), whose KEMILOAD is pointed at the shared script;
  * `listen=udp:127.0.0.1:<SIP_PORT>` instead of `port=5060`, `children`
    equal to ours, `mpath` for Debian's module folder;
  * `debug` set to --basic-kam-debug (default 0 = warnings, the level our
    side logs at) and the log to stderr (server.log) rather than syslog: at
    the cfg's debug=2 every request writes a latency line and every INVITE
    and BYE an acc record (NOTICE), which our side does not do; with no
    syslog daemon here libc would send them to /dev/console. The acc module
    is still loaded with its log backend only (no db_url, no db flags).

Optionally (--basic-kam-maxbuffer) Kamailio's `maxbuffer`, for a run with
the same UDP receive buffer as ours.

Everything else (tm/rr/registrar/acc/pike/htable parameters, import_file of
a kamailio-local.cfg that does not exist, TCP left on) is the file as it is.
Our side gets bench/evapi/basic.toml.in with the cfg's values.

Load: one REGISTER of bob whose contact is the SIPp UAS (SIPp, the
scenario tests/sipp/register.xml), then the UAS (tests/sipp/uas_rr.xml)
answers and a SIPp UAC (tests/sipp/uac_rr.xml) calls sip:bob@<server>,
following Record-Route for ACK and BYE.
"""
import os
import re
import subprocess
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
COMPAT = os.path.normpath(os.path.join(REPO, "..", "shared", "compat"))
KAM_CFG = os.path.join(COMPAT, "kamailio-basic-kemi.cfg")
SCRIPT = os.path.join(COMPAT, "kamailio-basic-kemi-lua.lua")
REGISTER_XML = os.path.join(REPO, "tests", "sipp", "register.xml")
UAC_XML = os.path.join(REPO, "tests", "sipp", "uac_rr.xml")
UAS_XML = os.path.join(REPO, "tests", "sipp", "uas_rr.xml")
DEBIAN_MPATH = "/usr/lib/x86_64-linux-gnu/kamailio/modules/"
DROPPED = ("WITH_MYSQL", "WITH_AUTH", "WITH_IPAUTH", "WITH_USRLOCDB", "WITH_NAT", "WITH_ACCDB")


def kamailio_cfg(sip_port, children, debug, maxbuffer=0, src=KAM_CFG, script=SCRIPT):
    """The transformed copy of Kamailio's example cfg (text); raises if the
    cfg no longer has one of the lines it expects, rather than run a
    different configuration silently."""
    text = open(src).read()
    done = set()
    out = []
    in_lua = False
    for line in text.splitlines():
        m = re.match(r"\s*#!define\s+(\w+)\s*$", line)
        if m and m.group(1) in DROPPED:
            done.add(m.group(1))
            continue
        if line.startswith("#!ifdef WITH_CFGLUA"):
            in_lua = True
        elif line.startswith("#!endif"):
            in_lua = False
        if in_lua and line.startswith("#!define KEMILOAD"):
            line = f'#!define KEMILOAD "{script}"'
            done.add("KEMILOAD")
        elif re.match(r"^children=\d+\s*$", line):
            line = f"children={children}"
            done.add("children")
        elif re.match(r"^port=\d+\s*$", line):
            line = f"listen=udp:127.0.0.1:{sip_port}"
            done.add("listen")
        elif line.startswith("# mpath="):
            line = f'mpath="{DEBIAN_MPATH}"'
            done.add("mpath")
        elif re.match(r"^debug=\d+\s*$", line):
            # both branches (WITH_DEBUG or not) get the same level
            line = f"debug={debug}"
            done.add("debug")
        elif re.match(r"^log_stderror=\w+\s*$", line):
            line = "log_stderror=yes"
            done.add("log_stderror")
        out.append(line)
    want = set(DROPPED) | {"KEMILOAD", "children", "listen", "mpath", "debug", "log_stderror"}
    if want - done:
        raise RuntimeError(f"{src}: expected lines not found: {sorted(want - done)}")
    head = "# written by bench/basic.py for one benchmark run; see its docstring\n#!define WITH_CFGLUA"
    if maxbuffer:
        # the UDP receive buffer Kamailio may grow to (default 256 KB; ours asks for 1 MB)
        head += f"\nmaxbuffer={maxbuffer}"
    out.insert(1, head)
    return "\n".join(out) + "\n"


def evapi_conf(sip_port, evapi_port, children, script=SCRIPT):
    tpl = open(os.path.join(HERE, "evapi", "basic.toml.in")).read()
    return (tpl.replace("@SIP_PORT@", str(sip_port)).replace("@EVAPI_PORT@", str(evapi_port))
            .replace("@CHILDREN@", str(children)).replace("@SCRIPT@", script))


def check_cfg(path):
    """`kamailio -c -f path`: (ok, output)."""
    p = subprocess.run(["kamailio", "-c", "-f", path], capture_output=True, text=True, timeout=60)
    return p.returncode == 0, p.stdout + p.stderr


def udp_bound(port):
    out = subprocess.run(["ss", "-Huln", f"sport = :{port}"], capture_output=True, text=True).stdout
    return bool(out.strip())


def register(rdir, sip_port, sipp_port, uas_port, register_xml=REGISTER_XML):
    """bob's contact is the UAS; raises if the REGISTER did not get its 200s."""
    if not os.path.exists(register_xml):
        raise RuntimeError(f"{register_xml} not found (--basic-register names another copy)")
    cmd = ["sipp", "-sf", register_xml, "-key", "user", "bob", "-key", "contact_port", str(uas_port),
           "-key", "expires", "3600", "-key", "final_expires", "3600", "-m", "1",
           "-i", "127.0.0.1", "-p", str(sipp_port), "-cp", str(sipp_port + 100),
           "-mp", str(sipp_port + 200), f"127.0.0.1:{sip_port}", "-nostdin",
           "-timeout", "15s", "-timeout_error"]
    with open(os.path.join(rdir, "register.out"), "w") as f:
        p = subprocess.run(cmd, cwd=rdir, stdout=f, stderr=subprocess.STDOUT, timeout=60)
    if p.returncode != 0:
        raise RuntimeError(f"REGISTER failed (sipp exit {p.returncode}), see {rdir}/register.out")


def start_uas(rdir, ncalls, duration, uas_port):
    """The SIPp callee, bounded: it ends after ncalls calls or its timeout."""
    cmd = ["sipp", "-sf", UAS_XML, "-i", "127.0.0.1", "-p", str(uas_port), "-m", str(ncalls),
           "-cp", str(uas_port + 100), "-mp", str(uas_port + 200), "-nostdin",
           "-trace_stat", "-stf", "uas_stat.csv", "-fd", "1", "-trace_err",
           "-buff_size", "4194304", "-timeout", f"{duration + 60}s", "-timeout_error"]
    p = subprocess.Popen(cmd, cwd=rdir, stdout=open(os.path.join(rdir, "uas.out"), "w"),
                         stderr=subprocess.STDOUT)
    t0 = time.time()
    while time.time() - t0 < 10:
        if p.poll() is not None:
            raise RuntimeError(f"SIPp UAS exited at once ({p.returncode}), see {rdir}/uas.out")
        if udp_bound(uas_port):
            return p
        time.sleep(0.05)
    p.terminate()
    raise RuntimeError(f"SIPp UAS did not bind 127.0.0.1:{uas_port}")


def uac_cmd(rate, ncalls, duration, sip_port, sipp_port):
    return ["sipp", "-sf", UAC_XML, "-s", "bob", "-r", str(rate), "-rp", "1000", "-m", str(ncalls),
            "-l", "30000", "-i", "127.0.0.1", "-p", str(sipp_port), f"127.0.0.1:{sip_port}",
            "-nostdin", "-trace_stat", "-stf", "stat.csv", "-fd", "1", "-trace_rtt",
            "-rtt_freq", "1", "-cp", str(sipp_port + 100), "-mp", str(sipp_port + 200),
            "-buff_size", "4194304", "-timeout", f"{duration + 40}s", "-timeout_error"]

"""PostgreSQL set-ups beyond the single plain server of harness.Postgres:
a server that speaks TLS only, with a certificate from a CA made at test
time (openssl), and a primary with a streaming standby (pg_basebackup -R),
synchronous or not.  Each lives in its own temporary directories on free
ports and is removed by destroy(), also when a test fails.
"""

import os
import pwd
import subprocess
import tempfile
import time

import harness


def openssl(*args, cwd):
    result = subprocess.run(["openssl"] + list(args), cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    if result.returncode != 0:
        raise RuntimeError("openssl %s failed: %s" % (args[0], result.stdout))


class TestCA:
    """A CA and a server certificate for localhost and 127.0.0.1, made
    now; plus a second, unrelated CA (other_ca) that signed nothing."""

    def __init__(self, directory):
        self.dir = directory
        for name in ("ca", "other_ca"):
            openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-keyout", name + ".key", "-out", name + ".crt",
                    "-days", "2", "-subj", "/CN=mesh-worker test " + name,
                    cwd=directory)
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout",
                "server.key", "-out", "server.csr", "-subj", "/CN=localhost",
                cwd=directory)
        with open(os.path.join(directory, "san.cnf"), "w") as f:
            f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt",
                "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.crt",
                "-days", "2", "-extfile", "san.cnf", cwd=directory)
        self.ca = os.path.join(directory, "ca.crt")
        self.other_ca = os.path.join(directory, "other_ca.crt")
        self.server_cert = os.path.join(directory, "server.crt")
        self.server_key = os.path.join(directory, "server.key")
        os.chmod(self.server_key, 0o600)


class TlsPostgres(harness.Postgres):
    """A server that accepts TCP connections over TLS only: the superuser
    postgres without a password (the owner in the tests), every other
    login with its SCRAM password."""

    def __init__(self):
        super().__init__()
        self.certs = TestCA(tempfile.mkdtemp(prefix="certs-", dir=self.dir))
        if self.user:
            pw = pwd.getpwnam(self.user)
            for name in os.listdir(self.certs.dir):
                os.chown(os.path.join(self.certs.dir, name), pw.pw_uid,
                         pw.pw_gid)
            os.chown(self.certs.dir, pw.pw_uid, pw.pw_gid)
        self.settings.update({
            "ssl": "on", "ssl_cert_file": self.certs.server_cert,
            "ssl_key_file": self.certs.server_key,
            "password_encryption": "scram-sha-256"})
        with open(os.path.join(self.data, "pg_hba.conf"), "w") as f:
            f.write("local all all trust\n"
                    "hostssl all postgres 127.0.0.1/32 trust\n"
                    "hostssl all all 127.0.0.1/32 scram-sha-256\n"
                    "hostnossl all all 0.0.0.0/0 reject\n")
        # The owner's own connections (harness.Postgres.query) go over
        # the socket directory; TCP needs TLS.
        self.url = "postgresql://postgres@/postgres?host=%s&port=%d" % (
            self.dir, self.port)

    def tls_url(self, user, database, password=None, host="localhost",
                ca=None, **params):
        """A verify-full URL for user@host:port/database."""
        auth = user if password is None else "%s:%s" % (user, password)
        query = {"sslmode": "verify-full",
                 "sslrootcert": ca or self.certs.ca}
        query.update(params)
        return "postgresql://%s@%s:%d/%s?%s" % (
            auth, host, self.port, database,
            "&".join("%s=%s" % kv for kv in query.items()))


# ------------------------------------------------------------ replication

class ReplicatedPostgres:
    """A primary and a streaming standby made by pg_basebackup -R.

    With is_synchronous the primary waits for the standby at every commit
    (synchronous_standby_names names it, synchronous_commit=on)."""

    STANDBY_NAME = "standby1"

    def __init__(self, is_synchronous=True):
        common = {"wal_level": "replica", "max_wal_senders": "5",
                  "hot_standby": "on", "synchronous_commit": "on",
                  "wal_keep_size": "256MB"}
        self.is_synchronous = is_synchronous
        primary = dict(common)
        if is_synchronous:
            primary["synchronous_standby_names"] = "'%s'" % self.STANDBY_NAME
        self.primary = harness.Postgres(settings=primary)
        self.standby = None
        with open(os.path.join(self.primary.data, "pg_hba.conf"), "a") as f:
            f.write("host replication postgres 127.0.0.1/32 trust\n")
        self.primary.start()
        self.standby = harness.Postgres(settings=common, initdb=False)
        self.standby._run(
            "pg_basebackup", "-h", "127.0.0.1", "-p", str(self.primary.port),
            "-U", "postgres", "-D", self.standby.data, "-R",
            "--wal-method=stream", "--checkpoint=fast", "--no-sync")
        with open(os.path.join(self.standby.data, "postgresql.auto.conf"),
                  "a") as f:
            f.write("primary_conninfo = 'host=127.0.0.1 port=%d "
                    "user=postgres application_name=%s'\n"
                    % (self.primary.port, self.STANDBY_NAME))
        self.standby.start()
        harness.wait_for(self.is_streaming, 60, "the standby to stream")

    def is_streaming(self):
        rows = self.primary.query(
            "SELECT sync_state FROM pg_stat_replication "
            "WHERE application_name = %s AND state = 'streaming'",
            self.STANDBY_NAME)
        want = "sync" if self.is_synchronous else "async"
        return bool(rows) and rows[0][0] == want

    def url(self, database):
        """Both hosts, primary first; libpq picks the read-write one."""
        return ("postgresql://postgres@127.0.0.1:%d,127.0.0.1:%d/%s"
                "?target_session_attrs=read-write&connect_timeout=5"
                % (self.primary.port, self.standby.port, database))

    def crash_primary(self):
        """Stops the primary at once, as a power cut would."""
        self.primary._run("pg_ctl", "-D", self.primary.data, "-m",
                          "immediate", "-w", "stop")

    def promote(self):
        """Promotes the standby and waits until it accepts writes;
        returns time.time() at the promotion call."""
        at = time.time()
        self.standby._run("pg_ctl", "-D", self.standby.data, "-w",
                          "promote")
        harness.wait_for(lambda: not self.standby.query(
            "SELECT pg_is_in_recovery()")[0][0], 60, "the promotion")
        return at

    def destroy(self):
        if self.standby is not None:
            self.standby.destroy()
        self.primary.destroy()

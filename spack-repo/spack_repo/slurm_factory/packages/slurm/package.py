# Slurm Factory: Slurm built to be shipped as a relocatable tarball.
#
# Why this repository carries its own slurm recipe instead of builtin's:
#   * Versions and sources: the release matrix needs 25.11, 24.11 and 23.11
#     from SchedMD's release tarballs (download.schedmd.com). builtin (spack-
#     packages v2025.11.0) has only 24-11-6-1 of these, from a GitHub archive
#     with a different checksum.
#   * No silent feature loss: Slurm's configure searches /usr and /usr/local
#     for every optional library and quietly drops a feature it cannot find.
#     Here each feature is a variant that either points configure at a Spack
#     prefix or passes --without-<x>/--disable-<x>, so the build host can
#     neither add nor remove a feature; after `make install` the plugins each
#     enabled variant promises are checked and the build fails if one is
#     missing.
#   * Relocation: Slurm's own -rpath flags (--with-rpath, the default) plus
#     Spack's RPATHs are absolute. After install we prepend $ORIGIN-relative
#     entries so binaries, libslurm and the plugins under lib/slurm still find
#     each other (and dependencies copied into a view's lib/) after the tree
#     is moved; Spack's relocation leaves $ORIGIN entries untouched.
#   * libslurmfull stays a shared library (no --without-shared-libslurm):
#     plugins link against it, and $ORIGIN makes that survive relocation.
#
# Variant names are an interface: the Slurm Factory renderer
# (`cargo xtask spack-env`) writes specs such as
#   slurm@25-11-6-1 +pmix +hwloc +restd +jwt +nvml ...
# (without the namespace: this repository comes before the builtin one).

import os

from spack_repo.builtin.build_systems.autotools import AutotoolsPackage

from spack.package import *


class Slurm(AutotoolsPackage):
    """Slurm workload manager, built with every optional feature explicitly
    enabled from a Spack dependency or explicitly disabled (Slurm Factory)."""

    homepage = "https://slurm.schedmd.com"
    url = "https://download.schedmd.com/slurm/slurm-25.11.6.tar.bz2"

    license("GPL-2.0-or-later")

    # Spack version strings follow SchedMD's git tags (slurm-25-11-6-1);
    # the tarballs are the release tarballs of the same release.
    version(
        "25-11-6-1",
        sha256="6695aee51a36799917a4db4b1d787610af926b27b17c2e4246bf14c0fd029664",
        url="https://download.schedmd.com/slurm/slurm-25.11.6.tar.bz2",
    )
    version(
        "24-11-6-1",
        sha256="0614760306dfbd67eb76a31ed7a49e853fe3cdb48ca28ccdbe699c2e0db05a16",
        url="https://download.schedmd.com/slurm/slurm-24.11.6.tar.bz2",
    )
    version(
        "23-11-11-1",
        sha256="4a1713dceb5bfad74d3f43c9bfedf23603933f0d7148cdad7feedea57da4e45d",
        url="https://download.schedmd.com/slurm/slurm-23.11.11.tar.bz2",
    )

    def url_for_version(self, version):
        # 25-11-6-1 -> slurm-25.11.6.tar.bz2 (the trailing "-1" is the tag
        # revision, not part of the tarball name)
        major, minor, micro = str(version).split("-")[:3]
        return f"https://download.schedmd.com/slurm/slurm-{major}.{minor}.{micro}.tar.bz2"

    # --- variants: one per optional feature --------------------------------
    variant("pmix", default=True, description="PMIx MPI plugin (mpi/pmix)")
    variant("hwloc", default=True, description="Hardware topology through hwloc")
    variant(
        "restd", default=True, description="slurmrestd REST API (http-parser, libyaml)"
    )
    variant("jwt", default=True, description="JWT authentication (auth/jwt) through libjwt")
    variant("nvml", default=False, description="NVIDIA GPU autodetection (gpu/nvml, CUDA)")
    variant("rsmi", default=False, description="AMD GPU autodetection (gpu/rsmi, ROCm SMI)")
    variant("hdf5", default=True, description="HDF5 job profiling (acct_gather_profile/hdf5)")
    variant("lua", default=True, description="Lua job_submit/cli_filter/burst_buffer plugins")
    variant("freeipmi", default=True, description="IPMI energy accounting through FreeIPMI")
    variant("lz4", default=True, description="lz4 compression (sbcast)")
    variant("readline", default=True, description="readline in interactive commands")
    variant("pam", default=True, description="PAM support and pam_slurm_adopt (linux-pam)")
    variant(
        "mysql",
        default=True,
        description="MySQL/MariaDB accounting storage for slurmdbd (mariadb-c-client)",
    )
    variant(
        "sysconfdir",
        default="PREFIX/etc",
        values=any,
        description="Directory for slurm.conf (--sysconfdir), e.g. /etc/slurm",
    )

    # --- dependencies -------------------------------------------------------
    depends_on("c", type="build")
    depends_on("pkgconfig", type="build")
    depends_on("patchelf", type="build")  # $ORIGIN rpaths, see below

    depends_on("munge")  # auth/munge, cred/munge
    depends_on("json-c")  # serializer/json, slurmrestd
    depends_on("slurm_factory.curl")  # libcurl, our recipe (see curl/package.py)
    depends_on("dbus")  # cgroup/v2 talks to systemd over D-Bus
    depends_on("numactl")  # task/affinity NUMA binding (found via libnuma)
    # Not passed to configure (Slurm 23.11+ has no --with-ssl/--with-zlib):
    # direct links that pin one OpenSSL 3 and one zlib for the whole closure
    # (curl, libjwt, munge, mariadb-c-client).
    depends_on("openssl@3:")
    depends_on("zlib-api")
    depends_on("ncurses")  # terminal library behind readline-enabled commands

    depends_on("pmix@4:5", when="+pmix")
    depends_on("hwloc@2:", when="+hwloc")
    depends_on("http-parser", when="+restd")
    depends_on("libyaml", when="+restd")
    depends_on("libjwt", when="+jwt")
    # GPU libraries are build-only: the gpu/nvml and gpu/rsmi plugins are
    # compiled against the headers but not linked; Slurm dlopen()s the node's
    # own libnvidia-ml.so.1 / librocm_smi64.so (src/interfaces/gpu.c), which
    # must match the node's driver anyway. So neither CUDA nor ROCm SMI (with
    # its python run dependency) enters the runtime closure or the tarball.
    depends_on("cuda", type="build", when="+nvml")
    depends_on("rocm-smi-lib", type="build", when="+rsmi")
    # serial HDF5: an MPI-enabled HDF5 would drag an MPI (built for Slurm)
    # into Slurm's own dependencies
    depends_on("hdf5~mpi", when="+hdf5")
    depends_on("lua@5.1:5.4", when="+lua")
    depends_on("freeipmi", when="+freeipmi")
    depends_on("lz4", when="+lz4")
    depends_on("readline", when="+readline")
    depends_on("linux-pam", when="+pam")
    depends_on("mariadb-c-client", when="+mysql")

    # Slurm 23.11 has no --with-lua/--without-lua: configure takes whatever
    # lua pkg-config finds, so "~lua" could not be honoured there.
    conflicts("~lua", when="@:23", msg="Slurm 23.11 cannot be configured without lua")

    # --- configure ----------------------------------------------------------
    # (variant, configure option, dependency providing the prefix)
    _prefix_features = (
        ("pmix", "pmix", "pmix"),
        ("hwloc", "hwloc", "hwloc"),
        ("restd", "http_parser", "http-parser"),
        ("restd", "yaml", "libyaml"),
        ("jwt", "jwt", "libjwt"),
        ("nvml", "nvml", "cuda"),
        ("rsmi", "rsmi", "rocm-smi-lib"),
        ("freeipmi", "freeipmi", "freeipmi"),
        ("lz4", "lz4", "lz4"),
    )

    # Optional libraries no variant asks for: always off, so a build host
    # that happens to have them cannot change what gets built.
    _always_without = ("ofed", "ucx", "rdkafka", "hpe-slingshot", "oneapi")

    @property
    def pam_dir(self):
        return self.prefix.lib.security

    def configure_args(self):
        spec = self.spec
        args = [
            # an option this Slurm release does not know is an error, not a
            # warning at the end of a long log
            "--enable-option-checking=fatal",
            "--with-rpath",
            f"--with-munge={spec['munge'].prefix}",
            f"--with-json={spec['json-c'].prefix}",
            f"--with-libcurl={spec['curl'].prefix}",
            "--disable-sview",
            "--disable-gtktest",
        ]
        args += [f"--without-{x}" for x in self._always_without]
        if spec.satisfies("@24-11:"):
            # 24.11+: fail instead of silently building without cgroup/v2
            args += ["--enable-cgroupv2", "--without-s2n"]
        else:
            args.append("--without-rrdtool")

        for variant, option, dep in self._prefix_features:
            if spec.satisfies(f"+{variant}"):
                args.append(f"--with-{option}={spec[dep].prefix}")
            else:
                args.append(f"--without-{option}")

        if spec.satisfies("+restd"):
            args.append("--enable-slurmrestd")
        else:
            args.append("--disable-slurmrestd")

        if spec.satisfies("+hdf5"):
            args.append(f"--with-hdf5={spec['hdf5'].prefix.bin.h5cc}")
        else:
            args.append("--without-hdf5")

        args.append("--with-readline" if spec.satisfies("+readline") else "--without-readline")

        # --with-lua exists from 24.11 on; 23.11 finds lua through pkg-config
        if spec.satisfies("@24-11:"):
            args.append("--with-lua" if spec.satisfies("+lua") else "--without-lua")

        if spec.satisfies("+pam"):
            args += ["--enable-pam", f"--with-pam_dir={self.pam_dir}"]
        else:
            args.append("--disable-pam")

        if spec.satisfies("+mysql"):
            # a directory holding mysql_config or mariadb_config
            args.append(f"--with-mysql_config={spec['mariadb-c-client'].prefix.bin}")
        else:
            args.append("--without-mysql_config")

        sysconfdir = spec.variants["sysconfdir"].value
        if sysconfdir == "PREFIX/etc":
            sysconfdir = self.prefix.etc
        args.append(f"--sysconfdir={sysconfdir}")
        return args

    @run_before("configure")
    def make_pam_dir(self):
        # configure rejects a --with-pam_dir that does not exist yet
        if self.spec.satisfies("+pam"):
            mkdirp(self.pam_dir)

    # --- install ------------------------------------------------------------
    def install(self, spec, prefix):
        make("install")
        # libpmi2 for MPI launches through srun --mpi=pmi2
        make("-C", "contribs/pmi2", "install")
        if spec.satisfies("+pam"):
            make("-C", "contribs/pam_slurm_adopt", "install")

    def _expected_files(self):
        """Files that must exist after install, per enabled feature."""
        spec = self.spec
        plugins = ["auth_munge.so", "cred_munge.so", "serializer_json.so"]
        wanted = {
            "pmix": ["mpi_pmix.so"],
            "restd": ["serializer_yaml.so"],
            "jwt": ["auth_jwt.so"],
            "nvml": ["gpu_nvml.so"],
            "rsmi": ["gpu_rsmi.so"],
            "hdf5": ["acct_gather_profile_hdf5.so"],
            "lua": ["job_submit_lua.so", "cli_filter_lua.so"],
            "freeipmi": ["acct_gather_energy_ipmi.so"],
            "mysql": ["accounting_storage_mysql.so"],
        }
        for variant, names in wanted.items():
            if spec.satisfies(f"+{variant}"):
                plugins += names
        if spec.satisfies("@24-11:"):
            plugins.append("cgroup_v2.so")
        files = [join_path(self.prefix.lib.slurm, p) for p in plugins]
        if spec.satisfies("+restd"):
            files.append(join_path(self.prefix.sbin, "slurmrestd"))
        if spec.satisfies("+pam"):
            files.append(join_path(self.pam_dir, "pam_slurm_adopt.so"))
        return files

    @run_after("install")
    def check_features(self):
        missing = [f for f in self._expected_files() if not os.path.exists(f)]
        if missing:
            raise InstallError(
                "Slurm was configured without features its variants require; missing: "
                + ", ".join(os.path.relpath(m, self.prefix) for m in missing)
            )

    # --- relocation ---------------------------------------------------------
    # RPATH entries prepended per directory, relative to the ELF file itself.
    _origin_rpaths = {
        "bin": ("$ORIGIN/../lib", "$ORIGIN/../lib/slurm"),
        "sbin": ("$ORIGIN/../lib", "$ORIGIN/../lib/slurm"),
        "lib": ("$ORIGIN", "$ORIGIN/slurm"),
        "lib/slurm": ("$ORIGIN", "$ORIGIN/.."),
        "lib/security": ("$ORIGIN/..", "$ORIGIN/../slurm"),
    }

    @run_after("install")
    def add_origin_rpaths(self):
        patchelf = which("patchelf", path=self.spec["patchelf"].prefix.bin, required=True)
        for subdir, origin in self._origin_rpaths.items():
            directory = join_path(self.prefix, subdir)
            if not os.path.isdir(directory):
                continue
            for name in sorted(os.listdir(directory)):
                path = join_path(directory, name)
                if os.path.islink(path) or not os.path.isfile(path):
                    continue
                with open(path, "rb") as f:
                    if f.read(4) != b"\x7fELF":
                        continue
                current = patchelf("--print-rpath", path, output=str).strip()
                entries = [e for e in current.split(":") if e]
                new = [o for o in origin if o not in entries] + entries
                if new != entries:
                    # DT_RPATH, like Spack's own relocation (--force-rpath):
                    # plugins are dlopen()ed and rely on it being inherited
                    patchelf("--force-rpath", "--set-rpath", ":".join(new), path)

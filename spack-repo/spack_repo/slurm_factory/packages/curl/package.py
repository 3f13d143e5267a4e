# Slurm Factory: libcurl for relocatable Slurm builds.
#
# Why this repository carries its own curl:
#   * curl's configure probes the build host for optional libraries (libpsl,
#     libldap, nghttp2, brotli, zstd, libidn2, ...) whenever it is not told
#     otherwise. A package that silently links /usr/lib/... cannot be shipped
#     in a relocatable tarball, so every optional feature below is switched
#     on with a Spack dependency or switched off explicitly, never left to
#     auto-detection.
#   * Slurm only needs libcurl's HTTP(S) client (influxdb profiling,
#     elasticsearch job completion, HPE Slingshot) on top of OpenSSL 3; LDAP
#     (+ldap) comes from a client-only OpenLDAP for sites that want ldap://
#     URLs in the curl they ship.
#   * Autotools only, Linux only: no Windows/macOS build systems to carry.
#
# Because environment repositories are searched before `builtin`, this recipe
# also serves every other package of the environment that depends on `curl`
# (cmake, mariadb-c-client, ...). The `libs` and `tls` variants exist so the
# constraints those packages place on curl (`curl libs=shared`,
# `tls=openssl`) still concretize.

from spack_repo.builtin.build_systems.autotools import AutotoolsPackage

from spack.package import *


class Curl(AutotoolsPackage):
    """libcurl and the curl tool, built against OpenSSL with every optional
    dependency pinned to a Spack package or disabled (Slurm Factory)."""

    homepage = "https://curl.se/"
    url = "https://curl.se/download/curl-8.15.0.tar.bz2"

    license("curl")

    # Upstream release tarballs; checksums as published in spack-packages
    # v2025.11.0 (builtin curl recipe).
    version("8.15.0", sha256="699a6d2192322792c88088576cff5fe188452e6ea71e82ca74409f07ecc62563")
    version("8.14.1", sha256="5760ed3c1a6aac68793fc502114f35c3e088e8cd5c084c2d044abdf646ee48fb")

    variant(
        "tls",
        default="openssl",
        values=("openssl",),
        multi=True,
        description="TLS backend (OpenSSL only in Slurm Factory)",
    )
    variant("nghttp2", default=True, description="HTTP/2 support through nghttp2")
    # Off by default: nothing in Slurm uses LDAP URLs, and the concretizer
    # drops a default-on ldap from a transitive curl anyway when OpenLDAP's
    # dependencies cost it a preferred version elsewhere. Ask for
    # `slurm_factory.curl+ldap` explicitly where it is wanted.
    variant("ldap", default=False, description="LDAP support through a client-only OpenLDAP")
    variant("libssh2", default=False, description="SCP/SFTP support through libssh2")
    variant(
        "libs",
        default="shared",
        values=("shared", "static"),
        multi=True,
        description="Build shared libs, static libs or both",
    )

    depends_on("c", type="build")
    depends_on("pkgconfig", type="build")
    # curl 8.15.0's build runs a perl script even with the docs disabled.
    depends_on("perl", type="build", when="@8.15.0")

    depends_on("openssl@3:")
    depends_on("zlib-api")
    depends_on("nghttp2", when="+nghttp2")
    depends_on("openldap+client_only", when="+ldap")
    depends_on("libssh2", when="+libssh2")

    # Protocols without any external library that nothing in a Slurm
    # installation uses; turning them off shrinks the attack surface of a
    # library that slurmctld/slurmd load.
    unused_protocols = ("dict", "gopher", "mqtt", "rtsp", "smb", "telnet", "tftp")

    def configure_args(self):
        spec = self.spec
        args = [
            "--enable-option-checking=fatal",  # no silently ignored options
            f"--with-openssl={spec['openssl'].prefix}",
            f"--with-zlib={spec['zlib-api'].prefix}",
            # let OpenSSL's own configuration decide which CAs are trusted,
            # so no build-host CA path is baked into the library
            "--without-ca-bundle",
            "--without-ca-path",
            "--with-ca-fallback",
            # optional libraries we never want picked up from the build host
            "--without-libpsl",
            "--without-brotli",
            "--without-zstd",
            "--without-libidn2",
            "--without-librtmp",
            "--without-libssh",
            "--without-gssapi",
            "--without-libgsasl",
            "--disable-docs",
            "--disable-manual",
        ]
        args += [f"--disable-{p}" for p in self.unused_protocols]
        args += self.enable_or_disable("libs")

        if spec.satisfies("+nghttp2"):
            args.append(f"--with-nghttp2={spec['nghttp2'].prefix}")
        else:
            args.append("--without-nghttp2")

        if spec.satisfies("+libssh2"):
            args.append(f"--with-libssh2={spec['libssh2'].prefix}")
        else:
            args.append("--without-libssh2")

        if spec.satisfies("+ldap"):
            # LDAPS follows automatically when both LDAP and TLS are present
            args.append("--enable-ldap")
            # --with-ldap=PATH exists from curl 8.15 on; older releases find
            # OpenLDAP through the include/lib paths Spack's wrapper injects.
            if spec.satisfies("@8.15:"):
                args.append(f"--with-ldap={spec['openldap'].prefix}")
        else:
            args += ["--disable-ldap", "--disable-ldaps"]
            if spec.satisfies("@8.15:"):
                args.append("--without-ldap")

        return args

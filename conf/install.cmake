# SPDX-License-Identifier: Apache-2.0
# Install layout (cmake --install build [--prefix /usr]) and the Debian package (scripts/package):
#   bin/pkiva                               the program
#   /etc/pkiva/pkiva.conf                   the commented sample, installed only if absent
#   share/man/man8/pkiva.8                  pkiva(8), from doc/pkiva.8
#   lib/systemd/system/pkiva.service        the hardened unit (from conf/systemd/pkiva.service.in)
#   lib/sysusers.d/pkiva.conf               the pkiva system user
#   share/doc/pkiva/                        README, alert rules, Grafana dashboard
# (/etc/pkiva with prefix /usr, the default here; else PREFIX/etc/pkiva.)
# Relative to the prefix: /usr/lib/systemd/system, or /usr/local/lib/systemd/system, both in
# systemd's search path (likewise sysusers.d).
set(PKIVA_SYSTEMD_UNIT_DIR "lib/systemd/system" CACHE STRING "where pkiva.service is installed")
set(PKIVA_SYSUSERS_DIR "lib/sysusers.d" CACHE STRING "where the pkiva user's sysusers.d file goes")
# Type=notify needs sd_notify; a build without it runs the unit as Type=exec (ready when started).
if(PKIVA_SYSTEMD)
  set(PKIVA_UNIT_TYPE notify)
else()
  set(PKIVA_UNIT_TYPE exec)
endif()
configure_file(${CMAKE_SOURCE_DIR}/doc/pkiva.8 ${CMAKE_BINARY_DIR}/pkiva.8 @ONLY)

if(TARGET pkiva)
  install(TARGETS pkiva RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endif()
install(FILES ${CMAKE_BINARY_DIR}/pkiva.8 DESTINATION ${CMAKE_INSTALL_MANDIR}/man8)
install(FILES ${CMAKE_SOURCE_DIR}/conf/systemd/pkiva-sysusers.conf
        DESTINATION ${PKIVA_SYSUSERS_DIR} RENAME pkiva.conf)
install(FILES ${CMAKE_SOURCE_DIR}/README.md ${CMAKE_SOURCE_DIR}/conf/prometheus/pkiva-rules.yml
              ${CMAKE_SOURCE_DIR}/conf/grafana/pkiva-dashboard.json
        DESTINATION ${CMAKE_INSTALL_DOCDIR})
install(FILES ${CMAKE_SOURCE_DIR}/conf/pkiva.conf DESTINATION ${CMAKE_INSTALL_DOCDIR}
        RENAME pkiva.conf.sample)
# The unit names the installed binary and configuration, so it is written at install time for the
# prefix that install uses (`cmake --install --prefix P`, CPack's /usr), not the configured one.
# The configuration goes to /etc/pkiva for prefix /usr, else PREFIX/etc/pkiva (as GNUInstallDirs).
# The sample configuration is installed only if absent: an operator's edited file is never
# overwritten (the Debian package also declares it a conffile). file(INSTALL) adds DESTDIR
# itself; the existence check must add it by hand.
install(CODE "
  if(CMAKE_INSTALL_PREFIX STREQUAL \"/usr\")
    set(PKIVA_CONF_DIR /etc/pkiva)
  else()
    set(PKIVA_CONF_DIR \"\${CMAKE_INSTALL_PREFIX}/etc/pkiva\")
  endif()
  set(PKIVA_BIN \"\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_BINDIR}/pkiva\")
  set(PKIVA_UNIT_TYPE ${PKIVA_UNIT_TYPE})
  configure_file(\"${CMAKE_SOURCE_DIR}/conf/systemd/pkiva.service.in\"
                 \"${CMAKE_BINARY_DIR}/install-unit/pkiva.service\" @ONLY)
  file(INSTALL \"${CMAKE_BINARY_DIR}/install-unit/pkiva.service\"
       DESTINATION \"\${CMAKE_INSTALL_PREFIX}/${PKIVA_SYSTEMD_UNIT_DIR}\")
  if(EXISTS \"\$ENV{DESTDIR}\${PKIVA_CONF_DIR}/pkiva.conf\")
    message(STATUS \"Keeping: \$ENV{DESTDIR}\${PKIVA_CONF_DIR}/pkiva.conf\")
  else()
    file(INSTALL \"${CMAKE_SOURCE_DIR}/conf/pkiva.conf\" DESTINATION \"\${PKIVA_CONF_DIR}\"
         PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ)
  endif()
")

# cpack -G DEB (scripts/package): dependencies from the binary's shared libraries
# (dpkg-shlibdeps) plus what pkiva loads at run time or the maintainer scripts call.
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME pkiva)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "pkiva maintainers <pkiva@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
    "validation authority: OCSP responder, CRL publisher and RFC 3161 TSA with keys in an HSM")
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION
    "pkiva answers OCSP (RFC 6960, RFC 9919), publishes full and delta CRLs (RFC 5280) and\nissues RFC 3161 time stamps for a CA, signing every response with keys kept in a PKCS#11\ntoken through pkcs11-provider. Runs as the systemd service pkiva.service.")
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "pkcs11-provider (>= 1.0), openssl, adduser, procps")
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "softhsm2, opensc, prometheus")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${CMAKE_SOURCE_DIR}/conf/debian/conffiles ${CMAKE_SOURCE_DIR}/conf/debian/postinst
    ${CMAKE_SOURCE_DIR}/conf/debian/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
# Whatever the build folder's prefix: the unit then names /usr/bin/pkiva and /etc/pkiva.
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
include(CPack)

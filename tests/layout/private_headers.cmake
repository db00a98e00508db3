# SPDX-License-Identifier: Apache-2.0
# test_private_headers: probe_public (every module's public header) must build; each probe of one
# private header (from a target that links all modules) must fail, and fail because the header is
# not found, not for another reason.
# cmake -DBUILD_DIR=... -DHEADERS="tsa/tsa_int.h;..." -P private_headers.cmake
function(build_probe target result output)
  execute_process(COMMAND ${CMAKE_COMMAND} --build ${BUILD_DIR} --target ${target}
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  set(${result} ${rc} PARENT_SCOPE)
  set(${output} "${out}" PARENT_SCOPE)
endfunction()

build_probe(probe_public rc out)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "the public headers do not build from a module that links them:\n${out}")
endif()
if(HEADERS STREQUAL "")
  message(FATAL_ERROR "no private header: the probes test nothing")
endif()
foreach(header ${HEADERS})
  string(MAKE_C_IDENTIFIER ${header} id)
  string(REPLACE "." "\\." pattern ${header})
  build_probe(probe_${id} rc out)
  if(rc EQUAL 0)
    message(FATAL_ERROR "<${header}> builds from another module: it is not private")
  endif()
  if(NOT out MATCHES "${pattern}[:'].*(No such file|not found)")
    message(FATAL_ERROR "the probe of <${header}> failed, but not for a missing header:\n${out}")
  endif()
  message(STATUS "<${header}>: private (not found from another module)")
endforeach()

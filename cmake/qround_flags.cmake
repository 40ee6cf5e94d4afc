# Compiler flags for qround's own targets (never pushed onto consumers).

function(qround_target_warnings target)
  if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    target_compile_options(${target} PRIVATE -Wall -Wextra -Wno-unknown-pragmas)
  endif()
  if(QROUND_SANITIZE)
    target_compile_options(${target} PRIVATE -fsanitize=address,undefined -fno-omit-frame-pointer
                                             -fno-sanitize-recover=undefined)
    target_link_options(${target} PRIVATE -fsanitize=address,undefined)
  endif()
  if(QROUND_NATIVE)
    target_compile_options(${target} PRIVATE -march=native)
  endif()
endfunction()

# Per-ISA kernel folders: each gets its own flag set, and only there. Kernel TUs include no Eigen,
# STL containers or fmt, so nothing compiled with these flags is shared with generic code.
set(QROUND_X86 OFF)
if(CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64|amd64" AND CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
  set(QROUND_X86 ON)
endif()

function(qround_add_isa_kernels target)
  if(NOT QROUND_X86)
    return()
  endif()
  file(GLOB avx2_sources CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/src/kernels/avx2/*.cpp)
  file(GLOB vnni_sources CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/src/kernels/avx512vnni/*.cpp)
  file(GLOB amx_sources CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/src/kernels/amx/*.cpp)
  if(avx2_sources)
    target_sources(${target} PRIVATE ${avx2_sources})
    set_source_files_properties(${avx2_sources} PROPERTIES COMPILE_OPTIONS "-mavx2;-mfma;-mf16c")
    target_compile_definitions(${target} PRIVATE QROUND_HAVE_AVX2=1)
  endif()
  if(vnni_sources)
    target_sources(${target} PRIVATE ${vnni_sources})
    set_source_files_properties(${vnni_sources} PROPERTIES COMPILE_OPTIONS
      "-mavx2;-mfma;-mf16c;-mavx512f;-mavx512bw;-mavx512vl;-mavx512dq;-mavx512vnni")
    target_compile_definitions(${target} PRIVATE QROUND_HAVE_AVX512VNNI=1)
  endif()
  if(amx_sources)
    target_sources(${target} PRIVATE ${amx_sources})
    set_source_files_properties(${amx_sources} PROPERTIES COMPILE_OPTIONS
      "-mavx2;-mfma;-mavx512f;-mavx512bw;-mavx512vl;-mavx512vnni;-mamx-tile;-mamx-int8")
    target_compile_definitions(${target} PRIVATE QROUND_HAVE_AMX=1)
  endif()
endfunction()

// CMake wants a source file for every library target. The code of the shared libraries
// comes from the static libraries they are linked from (packaging/CMakeLists.txt).

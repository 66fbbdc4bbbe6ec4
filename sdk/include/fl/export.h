#ifndef FL_SDK_INCLUDE_FL_EXPORT_H_
#define FL_SDK_INCLUDE_FL_EXPORT_H_

#if defined(FL_SHARED_LIBRARY)
#define FL_EXPORT __attribute__((visibility("default")))
#else
#define FL_EXPORT
#endif

#endif  // FL_SDK_INCLUDE_FL_EXPORT_H_

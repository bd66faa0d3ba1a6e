#include <filesystem>
#include <iostream>
#include <new>
#include <system_error>

#include <c10/util/Exception.h>
#include <yaml-cpp/exceptions.h>

#include "cli/commands.h"
#include "plm/common/log.h"
#include "plm/common/user_error.h"
#include "plm/dist/error_file.h"
#include "plm/dist/process_group.h"

namespace plm::cli {

// Every exception a command can end in becomes one sentence on stderr (and in the launcher's error file,
// plm/dist/error_file.h) and an exit code, never std::terminate: 2 for what the user can fix (their files, recipe,
// arguments), 1 for what the machine ran out of or failed at.
int report_errors(const std::function<int()>& command) {
  std::string message;
  int code = 2;
  try {
    return command();
  } catch (const UserError& e) {  // config, tokenizer, conversation, sample, media, checkpoint, launch, demo errors
    message = e.what();
  } catch (const c10::Error& e) {  // a shape or value the model refuses (TORCH_CHECK)
    message = e.what_without_backtrace();
  } catch (const YAML::Exception& e) {  // YAML read outside the config loader, which names its files itself
    message = "invalid YAML or JSON (line " + std::to_string(e.mark.line + 1) + "): " + e.msg + ".";
  } catch (const std::filesystem::filesystem_error& e) {  // what() names the operation and the paths
    message = std::string(e.what()) + ".";
  } catch (const std::bad_alloc&) {
    message =
        "out of memory: an allocation failed (the machine's memory, or a ulimit/cgroup limit, is exhausted); nothing "
        "was written after the failure.";
    code = 1;
  } catch (const std::system_error& e) {  // e.g. a thread that cannot be started
    message = std::string("the system refused a request: ") + e.what() + " (" + e.code().message() + ").";
    code = 1;
  } catch (const dist::DistError& e) {
    report_failure(e);
    return 3;
  } catch (const std::exception& e) {
    message = e.what();
    code = 1;
  }
  std::cerr << message << '\n';
  dist::write_error_file({message, {}});
  return code;
}

void report_failure(const std::exception& e) {
  const auto* dist_error = dynamic_cast<const dist::DistError*>(&e);
  log::error("{}", e.what());
  log::flush();
  dist::write_error_file({e.what(), dist_error ? dist_error->ranks() : std::vector<int>{}});
}

}  // namespace plm::cli

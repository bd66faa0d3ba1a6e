#include <filesystem>
#include <iostream>
#include <new>
#include <system_error>

#include <c10/util/Exception.h>
#include <yaml-cpp/exceptions.h>

#include "cli/commands.h"
#include "plm/common/user_error.h"

namespace plm::cli {

// Every exception a command can end in becomes one sentence on stderr and an exit code, never std::terminate:
// 2 for what the user can fix (their files, recipe, arguments), 1 for what the machine ran out of or failed at.
int report_errors(const std::function<int()>& command) {
  try {
    return command();
  } catch (const UserError& e) {  // config, tokenizer, conversation, sample, media, checkpoint, launch, demo errors
    std::cerr << e.what() << '\n';
  } catch (const c10::Error& e) {  // a shape or value the model refuses (TORCH_CHECK)
    std::cerr << e.what_without_backtrace() << '\n';
  } catch (const YAML::Exception& e) {  // YAML read outside the config loader, which names its files itself
    std::cerr << "invalid YAML or JSON (line " << e.mark.line + 1 << "): " << e.msg << ".\n";
  } catch (const std::filesystem::filesystem_error& e) {  // what() names the operation and the paths
    std::cerr << e.what() << ".\n";
  } catch (const std::bad_alloc&) {
    std::cerr << "out of memory: an allocation failed (the machine's memory, or a ulimit/cgroup limit, is "
                 "exhausted); nothing was written after the failure.\n";
    return 1;
  } catch (const std::system_error& e) {  // e.g. a thread that cannot be started
    std::cerr << "the system refused a request: " << e.what() << " (" << e.code().message() << ").\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << e.what() << '\n';
    return 1;
  }
  return 2;
}

}  // namespace plm::cli

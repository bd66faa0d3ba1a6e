#include <iostream>

#include <c10/util/Exception.h>

#include "cli/commands.h"
#include "plm/common/user_error.h"

namespace plm::cli {

int report_errors(const std::function<int()>& command) {
  try {
    return command();
  } catch (const UserError& e) {  // config, tokenizer, conversation, sample, media, checkpoint, launch, demo errors
    std::cerr << e.what() << '\n';
  } catch (const c10::Error& e) {  // a shape or value the model refuses (TORCH_CHECK)
    std::cerr << e.what_without_backtrace() << '\n';
  }
  return 2;
}

}  // namespace plm::cli

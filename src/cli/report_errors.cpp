#include <iostream>

#include <c10/util/Exception.h>

#include "cli/commands.h"
#include "plm/ckpt/safetensors.h"
#include "plm/common/reasoned_error.h"
#include "plm/config/source.h"
#include "plm/data/sample.h"
#include "plm/text/conversation.h"
#include "plm/text/tokenizer.h"

namespace plm::cli {

int report_errors(const std::function<int()>& command) {
  try {
    return command();
  } catch (const config::ConfigError& e) {
    std::cerr << e.what() << '\n';
  } catch (const text::TokenizerError& e) {
    std::cerr << e.what() << '\n';
  } catch (const text::ConversationError& e) {
    std::cerr << e.what() << '\n';
  } catch (const data::SampleError& e) {
    std::cerr << e.what() << '\n';
  } catch (const ckpt::CheckpointError& e) {
    std::cerr << e.what() << '\n';
  } catch (const ReasonedError& e) {  // media, sample, generation errors: one sentence with a reason
    std::cerr << e.what() << '\n';
  } catch (const c10::Error& e) {  // a shape or value the model refuses (TORCH_CHECK)
    std::cerr << e.what_without_backtrace() << '\n';
  }
  return 2;
}

}  // namespace plm::cli
